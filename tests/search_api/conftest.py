"""Fixtures for the API tests: a tiny random encoder, an embedded store indexed by the real
pipeline, TestClients with the lifespan entered, a real uvicorn server on a loopback port, and
headless Chromium (Playwright driving Debian's /usr/bin/chromium; no browser download)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import sync_playwright

from encoders.testing import tiny_encoder
from indexer.pipeline import index_corpus
from indexer.store import Store
from indexer.stores import open_store
from search_api.app import create_app
from search_api.settings import ApiSettings

DOCS: list[dict[str, Any]] = [
    {"id": "fox", "text": "The quick brown fox jumps over the lazy dog.", "source": "web",
     "year": 1999, "lang": "en"},
    {"id": "vitd", "text": "Vitamin D deficiency is associated with infection in adults.",
     "title": "Vitamin D", "source": "pubmed", "year": 2004, "lang": "en"},
    {"id": "rank", "text": "Search engines rank documents by the cosine similarity of embeddings.",
     "source": "arxiv", "year": 2019, "lang": "en"},
    {"id": "llm", "text": "Large language models turn text into vectors (bidirectional attention).",
     "source": "arxiv", "year": 2024, "lang": "en"},
    {"id": "cells", "text": "Proteins, cells and genes: relevant passages for biology questions.",
     "source": "pubmed", "year": 2011, "lang": "de"},
    {"id": "claim", "text": "Given a scientific claim, documents support or refute the claim.",
     "source": "pubmed", "year": 2016, "lang": "en"},
]  # fmt: skip

CHROMIUM = os.environ.get("EMBER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# A wait long enough that concurrent requests of a test always meet in one micro-batch; a batch
# closes as soon as it is full, so this bounds latency, it is not what the tests assert.
BATCH_WAIT_MS = 200.0


def make_settings(tmp: Path, **overrides: Any) -> ApiSettings:
    # dense by default: most API tests check cosine scores; the search modes (and the server's
    # own default, hybrid) are tested explicitly in test_search_modes.py
    values: dict[str, Any] = {
        "data_dir": tmp, "api_keys": [], "api_batch_wait_ms": 5.0, "search_mode": "dense",
    }  # fmt: skip
    values.update(overrides)
    return ApiSettings(**values)


@pytest.fixture(scope="session")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return tiny_encoder(tmp_path_factory.mktemp("tiny") / "m", "llama")


@pytest.fixture
def forwards(encoder: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the model forwards the encoder runs during a test."""
    sizes: list[int] = []
    real = encoder.embed_batch

    def counting(items: Any) -> Any:
        sizes.append(len(items))
        return real(items)

    monkeypatch.setattr(encoder, "embed_batch", counting)
    return sizes


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in DOCS) + "\n")
    return path


@pytest.fixture(scope="session")
def store(
    tmp_path_factory: pytest.TempPathFactory, encoder: Any, corpus_file: Path
) -> Iterator[Store]:
    """The default embedded store (what ``ember serve`` opens) with alias ``default`` (all
    DOCS) and alias ``small`` (two docs). Shared by the API tests, which only read it."""
    s = open_store(make_settings(tmp_path_factory.mktemp("store")))
    index_corpus(corpus_file, "default", encoder, s, progress=False)
    small = corpus_file.parent / "small.jsonl"
    small.write_text("\n".join(json.dumps(d) for d in DOCS[:2]) + "\n")
    index_corpus(small, "small", encoder, s, progress=False)
    yield s
    s.close()


LONG_DOCS: list[dict[str, Any]] = [
    {"id": f"long{i}", "title": f"Long {i}", "source": "pubmed" if i % 2 else "arxiv",
     "text": " ".join([DOCS[i % len(DOCS)]["text"], DOCS[(i + 1) % len(DOCS)]["text"],
                       DOCS[(i + 3) % len(DOCS)]["text"]])}
    for i in range(8)
]  # fmt: skip


@pytest.fixture(scope="session")
def chunked_store(
    tmp_path_factory: pytest.TempPathFactory, encoder: Any, corpus_file: Path
) -> Iterator[Store]:
    """An embedded store whose documents have several chunks each (8 tokens, alias
    ``default``): where chunk hits repeat documents and document hits do not."""
    s = open_store(make_settings(tmp_path_factory.mktemp("chunked")))
    path = corpus_file.parent / "long.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in LONG_DOCS) + "\n")
    index_corpus(path, "default", encoder, s, chunk_tokens=8, overlap=2, progress=False)
    yield s
    s.close()


@pytest.fixture
def own_store(tmp_path: Path, encoder: Any, corpus_file: Path) -> Iterator[Store]:
    """A store of the test's own (``tmp_path/own``) with the corpus indexed into ``docs``, for a
    test that changes it; closed after the test."""
    s = open_store(make_settings(tmp_path / "own"))
    try:
        index_corpus(corpus_file, "docs", encoder, s, progress=False)
        yield s
    finally:
        s.close()


def wait_ready(client: TestClient | httpx.Client, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.get("/health").status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError("the API did not become ready")


def fuzz(
    operations: list[Any],
    mode: Any,
    base_url: str,
    headers: dict[str, str],
    excused: Callable[[Any], bool],
    max_examples: int,
    seed: int,
) -> None:
    """Each schemathesis ``operation`` on ``max_examples`` requests generated in ``mode`` from
    Hypothesis' ``seed`` (a run is reproducible), sent to ``base_url`` with ``headers``; every
    default check applies, but ``positive_data_acceptance`` is left out for a response that
    ``excused(response)``: a refusal of a valid-by-schema request that no JSON schema can state."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as seeded
    from schemathesis.checks import CHECKS

    acceptance = next(c for c in CHECKS.get_all() if c.__name__ == "positive_data_acceptance")
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=max_examples,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @seeded(seed)
        def run(case: Any) -> None:
            response = case.call(base_url=base_url, headers=headers)
            excluded = [acceptance] if excused(response) else []
            case.validate_response(response, headers=headers, excluded_checks=excluded)

        run()


def rejected(client: TestClient, path: str, body: Any) -> dict[str, Any]:
    """POST ``body`` as JSON to ``path``; the API must refuse it with a 422 (its text shown if
    not). Returns the error body."""
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    out: dict[str, Any] = r.json()
    return out


ClientFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(tmp_path: Path, encoder: Any, store: Store) -> Iterator[ClientFactory]:
    """``make_client(**settings)`` -> a ready TestClient on the shared encoder and store."""
    stack = contextlib.ExitStack()

    def factory(
        *, app_encoder: Any = None, app_store: Any = None, wait: bool = True,
        raise_server_exceptions: bool = True, **overrides: Any,
    ) -> TestClient:  # fmt: skip
        app = create_app(
            make_settings(tmp_path, **overrides),
            encoder=app_encoder if app_encoder is not None else encoder,
            store=app_store if app_store is not None else store,
        )
        client = stack.enter_context(
            TestClient(app, raise_server_exceptions=raise_server_exceptions)
        )
        if wait:
            wait_ready(client)
        return client

    with stack:
        yield factory


@pytest.fixture
def client(make_client: ClientFactory) -> TestClient:
    return make_client()


class LiveServer:
    """The app under a real uvicorn server in a thread, on a loopback socket bound up front."""

    def __init__(self, app: FastAPI) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_keep_alive=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise AssertionError("uvicorn did not start")
            time.sleep(0.01)
        with httpx.Client(base_url=self.url) as c:
            wait_ready(c)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@pytest.fixture
def live_server(tmp_path: Path, encoder: Any, store: Store) -> Iterator[Callable[..., LiveServer]]:
    """``live_server(**settings)`` -> a started LiveServer (stopped after the test)."""
    stack = contextlib.ExitStack()

    def factory(*, app_encoder: Any = None, app_store: Any = None, **overrides: Any) -> LiveServer:
        app = create_app(
            make_settings(tmp_path, **overrides),
            encoder=app_encoder if app_encoder is not None else encoder,
            store=app_store if app_store is not None else store,
        )
        return stack.enter_context(LiveServer(app))

    with stack:
        yield factory


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's, at ``EMBER_CHROMIUM``), closed after the test."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: run `make system-deps` (Debian package chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()

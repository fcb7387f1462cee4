"""Health and warm-up, API keys, limits (413/429), metrics, the jobs router hook, and
micro-batching through a real uvicorn server."""

from __future__ import annotations

import asyncio
import importlib.machinery
import sys
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from indexer.store import Store
from search_api.app import JOBS_MODULE, create_app
from tests.search_api.conftest import (
    BATCH_WAIT_MS,
    ClientFactory,
    LiveServer,
    make_settings,
    wait_ready,
)


class GatedEncoder:
    """The real encoder, except that encodes wait for ``gate`` (open by default)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _wait(self) -> None:
        self.entered.set()
        assert self.gate.wait(30), "gate never opened"

    def encode_queries(self, *args: Any, **kwargs: Any) -> Any:
        self._wait()
        return self.inner.encode_queries(*args, **kwargs)

    def encode_queries_named(self, *args: Any, **kwargs: Any) -> Any:  # what /search calls
        self._wait()
        return self.inner.encode_queries_named(*args, **kwargs)

    def encode_documents(self, *args: Any, **kwargs: Any) -> Any:
        self._wait()
        return self.inner.encode_documents(*args, **kwargs)


# ---- health ------------------------------------------------------------------------------------
def test_health_is_503_until_the_encoder_warmed_up(
    make_client: ClientFactory, encoder: Any
) -> None:
    gated = GatedEncoder(encoder)
    gated.gate.clear()
    client = make_client(app_encoder=gated, wait=False)
    assert gated.entered.wait(30)  # warm-up is running and blocked
    r = client.get("/health")
    assert r.status_code == 503 and r.json() == {"status": "starting"}
    r = client.post("/search", json={"query": "x"})
    assert r.status_code == 503 and "warming up" in r.json()["message"]
    assert client.get("/tasks").status_code == 200  # static routes answer meanwhile
    gated.gate.set()
    wait_ready(client)
    body = client.get("/health").json()
    (served,) = body.pop("encoders")  # the default only, serving the shared store's aliases
    assert served["name"] == encoder.config.name and served["default"] is True
    assert served["fingerprint"] == encoder.fingerprint
    assert {"default", "small"} <= set(served["serves"])
    assert body == {
        "status": "ready",
        "encoder": encoder.config.name,
        "dim": encoder.dim,
        "fingerprint": encoder.fingerprint,
        "loading": [],
    }
    assert client.post("/search", json={"query": "x"}).status_code == 200


def test_encoder_that_fails_to_load_reports_failed(tmp_path: Path, store: Store) -> None:
    settings = make_settings(tmp_path, encoder=str(tmp_path / "no-such-model"))
    with TestClient(create_app(settings, store=store)) as client:
        deadline = time.monotonic() + 120  # a guard against hanging, not a timing assertion
        while client.get("/health").json()["status"] == "starting":
            assert time.monotonic() < deadline, "still starting"
            time.sleep(0.01)
        r = client.get("/health")
        assert r.status_code == 503
        assert r.json()["status"] == "failed"
        assert "no-such-model" in r.json()["detail"] and "Traceback" not in r.text
        assert client.post("/v1/embeddings", json={"input": "x"}).status_code == 503


# ---- API keys ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/search", {"query": "fox"}),
        ("POST", "/v1/embeddings", {"input": "fox"}),
        ("GET", "/collections", None),
    ],
)
def test_api_keys(make_client: ClientFactory, method: str, path: str, body: Any) -> None:
    client = make_client(api_keys=["key-one", "key-two"])

    def call(headers: dict[str, str]) -> Any:
        return client.request(method, path, json=body, headers=headers)

    missing = call({})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert call({"Authorization": "Basic a2V5LW9uZTo="}).status_code == 401
    assert call({"Authorization": "Bearer"}).status_code == 401
    wrong = call({"Authorization": "Bearer key-three"})
    assert wrong.status_code == 403 and wrong.json()["message"] == "invalid API key"
    assert call({"Authorization": "Bearer key-two"}).status_code == 200
    assert call({"Authorization": "bearer key-one"}).status_code == 200


def test_open_routes_need_no_key(make_client: ClientFactory) -> None:
    client = make_client(api_keys=["secret"])
    for path in ("/health", "/tasks", "/metrics", "/", "/openapi.json"):
        assert client.get(path).status_code == 200, path


def test_no_keys_configured_means_open(client: TestClient) -> None:
    r = client.post("/search", json={"query": "fox"}, headers={"Authorization": "Bearer junk"})
    assert r.status_code == 200


# ---- limits ------------------------------------------------------------------------------------
def test_body_size_limit(make_client: ClientFactory) -> None:
    client = make_client(api_max_body_bytes=300)
    assert client.post("/search", json={"query": "f" * 200}).status_code == 200
    r = client.post("/search", json={"query": "f" * 400})
    assert r.status_code == 413
    assert "300 bytes" in r.json()["message"]

    def chunks() -> Any:  # no Content-Length: counted while read
        yield b'{"query": "'
        for _ in range(10):
            yield b"f" * 50
        yield b'"}'

    r = client.post("/search", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.post("/v1/embeddings", json={"input": ["x" * 100] * 5}).status_code == 413


def test_concurrency_limit(make_client: ClientFactory, encoder: Any) -> None:
    gated = GatedEncoder(encoder)
    client = make_client(app_encoder=gated, api_max_concurrent=1)
    gated.gate.clear()
    gated.entered.clear()
    first: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: first.setdefault("r", client.post("/search", json={"query": "one"}))
    )
    worker.start()
    try:
        assert gated.entered.wait(30)  # the first request holds the only slot
        r = client.post("/search", json={"query": "two"})
        assert r.status_code == 429
        assert r.headers["retry-after"] == "1"
        assert "limit 1" in r.json()["message"]
        assert client.get("/health").status_code == 200  # probes are exempt
        assert client.get("/metrics").status_code == 200
    finally:
        gated.gate.set()
        worker.join(30)
    assert first["r"].status_code == 200
    assert client.post("/search", json={"query": "three"}).status_code == 200  # slot released


# ---- metrics -----------------------------------------------------------------------------------
def metric_value(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        if metric != name:
            continue
        got = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if "=" in part)
        if all(got.get(k) == f'"{v}"' for k, v in labels.items()):
            return float(value)
    raise AssertionError(f"{name} {labels} not in metrics")


def test_metrics(make_client: ClientFactory) -> None:
    client = make_client(api_max_body_bytes=500)
    for q in ("fox", "dog", "cells"):
        assert client.post("/search", json={"query": q}).status_code == 200
    assert client.post("/search", json={"query": "x" * 600}).status_code == 413
    assert client.post("/v1/embeddings", json={"input": ["a", "b"]}).status_code == 200
    client.get("/no/such/path")
    text = client.get("/metrics").text
    count = "ember_http_request_duration_seconds_count"
    assert metric_value(text, count, method="POST", route="/search", status="200") == 3
    assert metric_value(text, count, method="POST", route="/search", status="413") == 1
    assert metric_value(text, count, method="POST", route="/v1/embeddings", status="200") == 1
    assert metric_value(text, count, method="GET", route="other", status="404") == 1
    # warm-up (1 text) + 3 searches + one call of 2 texts, one encoder call each (sequential)
    assert metric_value(text, "ember_encoder_batch_size_count") == 5
    assert metric_value(text, "ember_encoder_batch_size_sum") == 6
    assert metric_value(text, "ember_encoder_queue_depth") == 0
    assert metric_value(text, "ember_http_rejected_total", reason="body_too_large") == 1
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")


# ---- the jobs router hook ----------------------------------------------------------------------
def test_jobs_router_is_included_behind_the_api_keys(
    tmp_path: Path, encoder: Any, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = APIRouter()

    @router.get("/jobs/{job_id}")
    def get_job(job_id: str) -> dict[str, str]:
        return {"id": job_id, "state": "PENDING"}

    module = types.ModuleType(JOBS_MODULE)
    module.__spec__ = importlib.machinery.ModuleSpec(JOBS_MODULE, None)
    module.router = router  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, JOBS_MODULE, module)
    app = create_app(make_settings(tmp_path, api_keys=["k"]), encoder=encoder, store=store)
    with TestClient(app) as client:
        assert client.get("/jobs/abc").status_code == 401
        r = client.get("/jobs/abc", headers={"Authorization": "Bearer k"})
        assert r.json() == {"id": "abc", "state": "PENDING"}
        text = client.get("/metrics").text
        assert metric_value(
            text, "ember_http_request_duration_seconds_count", route="/jobs/{job_id}", status="200"
        ) == 1  # fmt: skip


# ---- micro-batching over HTTP ------------------------------------------------------------------
def concurrent_posts(url: str, path: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(bodies))
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as c:
            return list(await asyncio.gather(*(c.post(path, json=b) for b in bodies)))

    return asyncio.run(go())


def test_concurrent_requests_are_micro_batched_over_http(
    live_server: Callable[..., LiveServer], encoder: Any, forwards: list[int]
) -> None:
    server = live_server(api_batch_wait_ms=BATCH_WAIT_MS, api_max_batch=64)
    forwards.clear()  # count the requests' forwards, not the server's warm-up
    texts = [f"concurrent text {i} about {w}" for i, w in enumerate("abcdefghijkl")]
    responses = concurrent_posts(server.url, "/v1/embeddings", [{"input": t} for t in texts])
    assert [r.status_code for r in responses] == [200] * len(texts)
    assert 1 <= len(forwards) < len(texts)
    assert sum(forwards) == len(texts)
    got = np.array([r.json()["data"][0]["embedding"] for r in responses], dtype=np.float32)
    forwards.clear()
    alone = np.concatenate([encoder.encode_documents([t]) for t in texts])
    assert len(forwards) == len(texts)
    np.testing.assert_allclose(got, alone, atol=1e-5, rtol=0)

    queries = [f"what about {w}" for w in "abcdefgh"]
    responses = concurrent_posts(
        server.url, "/search", [{"query": q, "task": "scifact", "top_k": 3} for q in queries]
    )
    with httpx.Client(base_url=server.url) as c:
        for q, r in zip(queries, responses, strict=True):
            assert r.status_code == 200
            one = c.post("/search", json={"query": q, "task": "scifact", "top_k": 3}).json()
            assert [h["id"] for h in r.json()["hits"]] == [h["id"] for h in one["hits"]]
            assert [h["score"] for h in r.json()["hits"]] == pytest.approx(
                [h["score"] for h in one["hits"]], abs=1e-5
            )
        text = c.get("/metrics").text
    # warm-up + two concurrent rounds in few batches + 8 sequential searches
    assert metric_value(text, "ember_encoder_batch_size_count") < 1 + len(texts) + 2 * len(queries)


def test_a_broker_without_a_qdrant_server_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from search_api.app import create_app
    from search_api.settings import ApiSettings, broker_without_qdrant

    assert broker_without_qdrant(ApiSettings(data_dir=tmp_path)) is None
    assert broker_without_qdrant(
        ApiSettings(data_dir=tmp_path, broker_url="redis://x", qdrant_url="http://q:6333")
    ) is None  # fmt: skip
    with caplog.at_level("WARNING", logger="search_api.app"):
        create_app(ApiSettings(data_dir=tmp_path, broker_url="redis://localhost:1/0"))
    (record,) = [r for r in caplog.records if "EMBER_QDRANT_URL" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert "EMBER_BROKER_URL is set without EMBER_QDRANT_URL" in record.getMessage()

"""Property: no request body makes the API answer 5xx.

Hypothesis posts arbitrary JSON values, unicode a tokenizer or Qdrant cannot take (lone
surrogates, NUL, right-to-left marks), integers far beyond 64 bits and non-JSON bytes to
``/search``, ``/v1/embeddings`` and the job routes, through the app (TestClient), and asserts a
2xx or a 4xx every time. Bodies mix the routes' real field names with arbitrary values, so many
pass validation and reach the encoder, the store and the job paths.

Job routes run on their own store and never start a job (the dispatch is stubbed out): what is
tested is how the API takes the request, not the job.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexer.store import Store
from indexer.stores import open_store
from tests.search_api.conftest import ClientFactory, make_settings

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # a failure reproduces; the strategies below aim at the hard cases
    database=None,
    suppress_health_check=list(HealthCheck),
)
SPECIAL = [
    "\ud800", "\udfff", "a\ud83d", "\x00", "a\x00b", "\u202e", "\u200f", "\u2067", "\ufeff",
    "\U0001f600", "e\u0301", "\u0000\u0000", " ", "",
]  # fmt: skip
HUGE = [2**63, -(2**63) - 1, 2**64, 10**20, -(10**400), 10**400]

chars = st.characters(exclude_categories=())  # surrogates (Cs) included
text = st.one_of(
    st.sampled_from(SPECIAL),
    st.text(chars, max_size=30),
    st.lists(st.sampled_from(SPECIAL) | st.text(chars, max_size=4), max_size=6).map("".join),
)
numbers = st.one_of(
    st.integers(),
    st.sampled_from(HUGE),
    st.floats(allow_nan=True, allow_infinity=True),  # NaN/Infinity: Python's json reads them
)
scalars = st.none() | st.booleans() | numbers | text
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)


def body_of(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """A route's own fields (each maybe absent) with arbitrary values too, or any JSON value."""
    known = st.fixed_dictionaries(
        {}, optional={name: strategy | values for name, strategy in fields.items()}
    )
    extra = st.dictionaries(text, values, max_size=2)
    return st.one_of(known, st.tuples(known, extra).map(lambda p: {**p[1], **p[0]}), values)


filters = st.dictionaries(
    st.sampled_from(["source", "year", "doc_id", "a", "meta.lang"]) | text,
    numbers | text | st.lists(numbers | text, max_size=3)
    | st.fixed_dictionaries({}, optional={op: numbers for op in ("gt", "gte", "lt", "lte")}),
    max_size=3,
)  # fmt: skip
SEARCH = body_of({
    "query": st.sampled_from(["fox", "vitamin d"]) | text,
    "task": st.sampled_from(["scifact", "nq"]) | text,
    "instruction": text,
    "top_k": numbers,
    "filter": filters,
    "collection": st.sampled_from(["default", "small", "missing"]) | text,
    "mode": st.sampled_from(["dense", "sparse", "hybrid"]),
    "fusion": st.fixed_dictionaries(
        {}, optional={"method": st.sampled_from(["rrf", "dbsf", "weighted"]), "k": numbers,
                      "weight": numbers, "scale": numbers, "prefetch": numbers},
    ),
})  # fmt: skip
EMBEDDINGS = body_of({
    "input": text | st.lists(text, max_size=4),
    "model": text,
    "encoding_format": st.sampled_from(["float", "base64"]),
    "dimensions": numbers,
    "user": text,
})  # fmt: skip
paths = (
    st.sampled_from(
        ["c.jsonl", ".", "../c.jsonl", "/etc/passwd", "c.jsonl\x00.txt", "link.jsonl", "c\ud800"]
    )
    | text
)
INDEX_JOB = body_of({
    "collection": st.sampled_from(["docs", "a__b"]) | text,
    "documents": st.lists(st.fixed_dictionaries({"id": text, "text": text}), max_size=3),
    "path": paths,
    "format": st.sampled_from(["auto", "jsonl", "dir"]),
    "on_error": st.sampled_from(["fail", "skip"]),
    "batch_docs": numbers,
    "chunk_tokens": numbers,
    "overlap": numbers,
})  # fmt: skip
TRAIN_JOB = body_of({
    "trainer": st.sampled_from(["simcse", "mntp", "nope"]) | text,
    "params": st.fixed_dictionaries(
        {}, optional={"from": st.sampled_from(["minilm"]) | paths, "out": paths,
                      "data": st.lists(paths, max_size=2) | paths, "corpus_pairs": values,
                      "max_steps": numbers},
    ),
})  # fmt: skip
# not JSON, not UTF-8; an integer longer than Python's int parsing allows (4300 digits)
raw_bodies = st.binary(max_size=40) | st.sampled_from(
    [b'{"query": "x", "top_k": ' + b"9" * 5000 + b"}", b'{"input": "a", "dimensions": 1e999}']
)


def post(client: TestClient, route: str, body: Any, content_type: str) -> Any:
    # ASCII: lone surrogates go as JSON escapes
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(route, content=content, headers={"content-type": content_type})


def no_server_error(response: Any, what: object) -> None:
    assert response.status_code < 500, f"{what!r} -> {response.status_code} {response.text}"


content_types = st.sampled_from(["application/json"] * 4 + ["text/plain", "application/x-www"])


@pytest.fixture
def job_client(
    tmp_path: Path, make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    """The API on its own store, with job roots, and job dispatch stubbed out."""
    import workers.client

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "c.jsonl").write_text('{"id": "a", "text": "x"}\n')
    (inputs / "link.jsonl").symlink_to(tmp_path)
    monkeypatch.setattr(workers.client, "_dispatch", lambda *args, **kwargs: None)
    store: Store = open_store(make_settings(tmp_path / "jobs-store"))
    try:
        yield make_client(app_store=store, job_input_dir=inputs, raise_server_exceptions=False)
    finally:
        store.close()


@pytest.mark.parametrize(("route", "bodies"), [("/search", SEARCH), ("/v1/embeddings", EMBEDDINGS)])
def test_search_and_embeddings_never_answer_5xx(
    make_client: ClientFactory, route: str, bodies: st.SearchStrategy[Any]
) -> None:
    client = make_client(raise_server_exceptions=False)

    @SETTINGS
    @given(body=bodies | raw_bodies, content_type=content_types)
    def run(body: Any, content_type: str) -> None:
        no_server_error(post(client, route, body, content_type), body)

    run()


@pytest.mark.parametrize(
    ("route", "bodies"), [("/jobs/index", INDEX_JOB), ("/jobs/train", TRAIN_JOB)]
)
def test_job_routes_never_answer_5xx(
    job_client: TestClient, route: str, bodies: st.SearchStrategy[Any]
) -> None:
    @SETTINGS
    @given(body=bodies | raw_bodies, content_type=content_types)
    def run(body: Any, content_type: str) -> None:
        no_server_error(post(job_client, route, body, content_type), body)

    run()


def test_job_reads_never_answer_5xx(job_client: TestClient) -> None:
    @SETTINGS
    @given(job_id=text, limit=text | numbers.map(str))
    def run(job_id: str, limit: str) -> None:
        safe = quote(job_id.encode("utf-8", "surrogatepass"), safe="")
        no_server_error(job_client.get(f"/jobs/{safe}"), job_id)
        no_server_error(
            job_client.get(f"/jobs?limit={quote(limit.encode('utf-8', 'surrogatepass'))}"), limit
        )

    run()

"""POST /search answers documents: one hit per document (its best chunk's id, score and payload,
its best chunks as passages) unless ``group_by: null``; ``offset`` pages either ranking."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from indexer.store import Store
from tests.search_api.conftest import LONG_DOCS, ClientFactory

QUERY = "vitamin d deficiency and infection"


@pytest.fixture
def chunked(make_client: ClientFactory, chunked_store: Store) -> TestClient:
    return make_client(app_store=chunked_store)


def search(client: TestClient, **body: Any) -> dict[str, Any]:
    r = client.post("/search", json={"query": QUERY, **body})
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_one_hit_per_document_by_default(chunked: TestClient, mode: str) -> None:
    body = search(chunked, top_k=100, mode=mode)
    assert body["group_by"] == "doc_id" and body["offset"] == 0
    docs = [h["payload"]["doc_id"] for h in body["hits"]]
    assert len(docs) == len(set(docs))
    if mode != "sparse":  # BM25 finds only the documents sharing a word with the query
        assert set(docs) == {d["id"] for d in LONG_DOCS}
    chunks = search(chunked, top_k=100, mode=mode, group_by=None)["hits"]
    assert len({h["payload"]["doc_id"] for h in chunks}) < len(chunks)  # chunks repeat docs
    best: dict[str, dict[str, Any]] = {}
    for h in chunks:  # ranked: the first chunk of a document is its best
        best.setdefault(h["payload"]["doc_id"], h)
    assert docs == list(best)[: len(docs)]
    for hit in body["hits"]:
        top = best[hit["payload"]["doc_id"]]
        assert hit["id"] == top["id"] and hit["payload"] == top["payload"]
        assert hit["score"] == pytest.approx(top["score"], abs=1e-5)
        passages = hit["passages"]
        assert 1 <= len(passages) <= 3 and passages[0]["id"] == hit["id"]
        assert passages[0]["chunk"] == hit["payload"]["chunk_index"]
        assert passages[0]["text"] == hit["payload"]["text"]
        own = [h for h in chunks if h["payload"]["doc_id"] == hit["payload"]["doc_id"]]
        assert [p["id"] for p in passages] == [h["id"] for h in own[: len(passages)]]
    assert all(h["passages"] == [] for h in chunks)


@pytest.mark.parametrize("group_by", ["doc_id", None])
def test_pages_concatenate(chunked: TestClient, group_by: str | None) -> None:
    whole = search(chunked, top_k=12, group_by=group_by, mode="hybrid")["hits"]
    pages = [
        search(chunked, top_k=5, offset=offset, group_by=group_by, mode="hybrid")
        for offset in (0, 5, 10)
    ]
    assert [p["offset"] for p in pages] == [0, 5, 10]
    assert [h["id"] for p in pages for h in p["hits"]][:12] == [h["id"] for h in whole]
    if group_by:
        assert len(whole) == len(LONG_DOCS) and pages[2]["hits"] == []


def test_filters_and_grouping(chunked: TestClient) -> None:
    hits = search(chunked, top_k=100, filter={"source": "pubmed"})["hits"]
    docs = [h["payload"]["doc_id"] for h in hits]
    assert sorted(docs) == sorted(d["id"] for d in LONG_DOCS if d["source"] == "pubmed")
    assert all(p["id"] for h in hits for p in h["passages"])


@pytest.mark.parametrize(
    "body, field",
    [
        ({"offset": -1}, "offset"),
        ({"offset": 1001}, "offset"),
        ({"offset": "2"}, "offset"),
        ({"group_by": "source"}, "group_by"),
    ],
)
def test_bad_paging_is_422_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    r = client.post("/search", json={"query": "x", **body})
    assert r.status_code == 422
    assert r.json()["message"].startswith(field)


def test_single_chunk_documents_answer_as_before(client: TestClient) -> None:
    docs = search(client, top_k=4)["hits"]
    chunks = search(client, top_k=4, group_by=None)["hits"]
    assert [h["id"] for h in docs] == [h["id"] for h in chunks]
    assert [len(h["passages"]) for h in docs] == [1, 1, 1, 1]

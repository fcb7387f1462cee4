"""POST /search modes: dense | sparse | hybrid, the server's default mode, fusion overrides and
the fusion stored with a collection, filters, and 409 for collections built without BM25."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from indexer.sparse import FUSION_META_KEY, Fusion, embed_queries
from indexer.store import Point, Store
from indexer.stores import open_store
from tests.search_api.conftest import ClientFactory, make_settings


def doc_ids(body: dict[str, Any]) -> list[str]:
    return [h["payload"]["doc_id"] for h in body["hits"]]


def test_sparse_mode_is_qdrant_bm25_and_needs_no_encoder_match(
    client: TestClient, store: Store
) -> None:
    r = client.post("/search", json={"query": "vitamin infection", "mode": "sparse", "top_k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "sparse"
    assert doc_ids(body)[0] == "vitd"
    (want,) = store.search_sparse_batch(
        store.resolve("default"), embed_queries(["vitamin infection"]), top_k=3
    )
    assert [h["id"] for h in body["hits"]] == [h.id for h in want]


def test_hybrid_is_the_stores_fused_query(client: TestClient, store: Store, encoder: Any) -> None:
    query = "cosine similarity of embeddings"
    r = client.post("/search", json={"query": query, "mode": "hybrid", "top_k": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "hybrid"
    vector = np.asarray(encoder.encode_queries([query], body["instruction"]), dtype=np.float32)
    (want,) = store.search_hybrid_batch(
        body["collection"], vector, embed_queries([query]), top_k=4, fusion=Fusion()
    )
    assert [h["id"] for h in body["hits"]] == [h.id for h in want]
    assert [h["score"] for h in body["hits"]] == [pytest.approx(h.score, rel=1e-4) for h in want]
    assert doc_ids(body)[0] == "rank"  # the only document with those words


def test_server_default_mode_is_hybrid_and_old_builds_fall_back_to_dense(
    make_client: ClientFactory, tmp_path: Path, encoder: Any
) -> None:
    client = make_client(search_mode="hybrid")
    assert client.post("/search", json={"query": "fox"}).json()["mode"] == "hybrid"

    old = open_store(make_settings(tmp_path / "old"))
    try:  # a build from before sparse vectors: dense only
        name = f"legacy__{encoder.fingerprint}__v1"
        old.create_collection(name, {"dense": encoder.dim})
        vec = np.asarray(encoder.encode_documents(["a legacy document"])[0], dtype=np.float32)
        old.upsert(name, [Point("00000000-0000-0000-0000-000000000001", {"dense": vec}, {})])
        old.switch_alias("legacy", name)
        legacy = make_client(app_store=old, search_mode="hybrid")
        r = legacy.post("/search", json={"query": "legacy", "collection": "legacy"})
        assert r.status_code == 200 and r.json()["mode"] == "dense"
        for mode in ("sparse", "hybrid"):
            r = legacy.post("/search", json={"query": "x", "collection": "legacy", "mode": mode})
            assert r.status_code == 409
            body = r.json()
            assert "reindex" in body["message"] and "BM25" in body["message"]
            assert [".".join(map(str, d["loc"][1:])) for d in body["detail"]] == ["mode"]
    finally:
        old.close()


def test_fusion_overrides_and_the_stored_fusion(
    make_client: ClientFactory, own_store: Store
) -> None:
    client = make_client(app_store=own_store)
    query = {"query": "language models vectors", "collection": "docs", "top_k": 6}
    dense = client.post("/search", json={**query, "mode": "dense"}).json()
    # weighted with w = 1 is the dense ranking with cosine scores
    w1 = client.post(
        "/search",
        json={**query, "mode": "hybrid", "fusion": {"method": "weighted", "weight": 1.0}},
    ).json()
    assert doc_ids(w1) == doc_ids(dense)[: len(w1["hits"])]
    # the fusion stored with the collection is the default; a request overrides it
    own_store.update_collection_meta(
        "docs", {FUSION_META_KEY: Fusion("weighted", weight=0.0).as_dict()}
    )
    stored = client.post("/search", json={**query, "mode": "hybrid"}).json()
    sparse = client.post("/search", json={**query, "mode": "sparse"}).json()
    n = len(sparse["hits"])  # BM25 matches first, then dense-only candidates at score 0
    assert doc_ids(stored)[:n] == doc_ids(sparse)
    assert all(0 < h["score"] < 1 for h in stored["hits"][:n])  # s / (s + c)
    assert all(h["score"] == 0 for h in stored["hits"][n:])
    again = client.post(
        "/search", json={**query, "mode": "hybrid", "fusion": {"weight": 1.0}}
    ).json()
    assert doc_ids(again) == doc_ids(w1)


def test_filters_apply_in_every_mode(client: TestClient) -> None:
    for mode in ("dense", "sparse", "hybrid"):
        r = client.post(
            "/search",
            json={"query": "claim cells vitamin", "mode": mode, "filter": {"source": "pubmed"}},
        )
        assert r.status_code == 200, (mode, r.text)
        hits = r.json()["hits"]
        assert hits and {h["payload"]["source"] for h in hits} == {"pubmed"}


def test_bad_mode_and_fusion_fields_are_422_naming_them(client: TestClient) -> None:
    for body, field in (
        ({"query": "x", "mode": "keyword"}, "mode"),
        ({"query": "x", "mode": "hybrid", "fusion": {"weight": 1.5}}, "weight"),
        ({"query": "x", "mode": "hybrid", "fusion": {"method": "sum"}}, "method"),
        ({"query": "x", "mode": "hybrid", "fusion": {"k": 0}}, "k"),
    ):
        r = client.post("/search", json=body)
        assert r.status_code == 422, body
        assert field in r.json()["message"], r.json()

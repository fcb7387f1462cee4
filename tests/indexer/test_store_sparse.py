"""Sparse (BM25) and hybrid search: the Store contract on both embedded backends.

What is checked is the engine's behaviour through our contract, with expectations computed
independently: RRF's 1 / (k + rank) sum (ranks from 0), the weighted formula's two ends (w = 1
is the dense ranking and cosine, w = 0 the BM25 ranking squashed by s / (s + c)), filters on
both prefetches, and that both backends return the same hits for the same data.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from indexer.edge_store import EdgeStore
from indexer.sparse import SPARSE_VECTOR, Fusion, embed_documents, embed_queries
from indexer.store import CollectionNotFoundError, Point, QdrantClientStore, Store
from tests.indexer.conftest import BOTH

DOCS = [
    "Aspirin reduces the risk of heart attacks in adults.",
    "Statins lower cholesterol and the risk of heart disease.",
    "The cat sat on the mat in the afternoon sun.",
    "Vitamin D deficiency is associated with infections.",
    "Heart rate variability during sleep in athletes.",
    "Cholesterol transport by lipoproteins in the liver.",
]
DIM = 6


def pid(i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"sparse-{i}"))


def dense_vectors() -> np.ndarray:
    x = np.random.default_rng(3).standard_normal((len(DOCS), DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def fill(store: Store, name: str = "docs") -> np.ndarray:
    vecs = dense_vectors()
    sparse = embed_documents(DOCS)
    store.create_collection(name, {"dense": DIM}, sparse=(SPARSE_VECTOR,))
    store.upsert(
        name,
        [
            Point(pid(i), {"dense": vecs[i]}, {"i": i, "even": i % 2 == 0}, {SPARSE_VECTOR: s})
            for i, s in enumerate(sparse)
        ],
    )
    return vecs


def ids(hits: list) -> list[int]:  # type: ignore[type-arg]
    return [h.payload["i"] for h in hits]


@BOTH
def test_sparse_vectors_are_declared_and_listed(store: Store) -> None:
    fill(store)
    store.create_collection("old", {"dense": DIM})
    info = {c.name: c for c in store.list_collections()}
    assert info["docs"].sparse == (SPARSE_VECTOR,)
    assert info["old"].sparse == ()
    assert store.sparse_names("docs") == (SPARSE_VECTOR,) and store.sparse_names("old") == ()
    with pytest.raises(CollectionNotFoundError):
        store.sparse_names("missing")


@BOTH
def test_sparse_search_is_bm25_with_idf(store: Store) -> None:
    fill(store)
    (heart, cholesterol, stop) = store.search_sparse_batch(
        "docs", embed_queries(["heart attack", "cholesterol", "the"]), top_k=6
    )
    assert ids(heart)[:1] == [0]  # "heart" and "attack": only doc 0 has both
    assert set(ids(heart)) == {0, 1, 4}  # every doc that says heart, nothing else
    assert set(ids(cholesterol)) == {1, 5}
    assert stop == []  # a stopword-only query has no terms
    # IDF: the rare term outweighs the common one
    (attack,) = store.search_sparse_batch("docs", embed_queries(["attack"]), top_k=1)
    (heart_only,) = store.search_sparse_batch("docs", embed_queries(["heart"]), top_k=3)
    assert attack[0].score > max(h.score for h in heart_only)


@BOTH
def test_rrf_scores_are_reciprocal_rank_sums(store: Store) -> None:
    vecs = fill(store)
    query = vecs[1] + 0.05 * vecs[4]
    # no tied BM25 scores ("heart" alone ties docs 0 and 1): the lists rank ties by id, the
    # engine's fusion by its internal order
    sparse = embed_queries(["heart attack"])
    (sparse_list,) = store.search_sparse_batch("docs", sparse, top_k=6)
    dense_list = store.search("docs", query, top_k=6)
    (hybrid,) = store.search_hybrid_batch(
        "docs", query[None, :], sparse, top_k=6, fusion=Fusion("rrf", k=60)
    )
    expected: dict[int, float] = {}  # Qdrant counts ranks from 0: the top hit adds 1 / k
    for ranked in (dense_list, sparse_list):
        for rank, h in enumerate(ranked):
            expected[h.payload["i"]] = expected.get(h.payload["i"], 0.0) + 1 / (60 + rank)
    got = {h.payload["i"]: h.score for h in hybrid}
    assert got == pytest.approx(expected, rel=1e-5)
    assert ids(hybrid)[0] == ids(dense_list)[0] == 1


@BOTH
def test_weighted_fusion_ends_are_dense_and_squashed_bm25(store: Store) -> None:
    vecs = fill(store)
    query = vecs[2]
    sparse = embed_queries(["cholesterol heart"])
    (dense_only,) = store.search_hybrid_batch(
        "docs", query[None, :], sparse, top_k=3, fusion=Fusion("weighted", weight=1.0)
    )
    plain = store.search("docs", query, top_k=3)
    assert ids(dense_only) == ids(plain)
    assert [h.score for h in dense_only] == pytest.approx([h.score for h in plain], abs=1e-5)
    (bm25_only,) = store.search_hybrid_batch(
        "docs", query[None, :], sparse, top_k=3, fusion=Fusion("weighted", weight=0.0, scale=2.0)
    )
    (bm25,) = store.search_sparse_batch("docs", sparse, top_k=3)
    assert ids(bm25_only) == ids(bm25)
    assert [h.score for h in bm25_only] == pytest.approx(
        [h.score / (h.score + 2.0) for h in bm25], rel=1e-5
    )


@BOTH
def test_filters_apply_to_both_prefetches(store: Store) -> None:
    vecs = fill(store)
    sparse = embed_queries(["heart cholesterol"])
    for fusion in (Fusion("rrf"), Fusion("dbsf"), Fusion("weighted", weight=0.5)):
        (hits,) = store.search_hybrid_batch(
            "docs", vecs[1][None, :], sparse, top_k=6, fusion=fusion, filter={"even": True}
        )
        assert hits and all(h.payload["i"] % 2 == 0 for h in hits)
    (hits,) = store.search_sparse_batch("docs", sparse, top_k=6, filter={"i": {"gte": 4}})
    assert set(ids(hits)) == {4, 5}


@BOTH
def test_empty_sparse_query_falls_back_to_the_dense_list(store: Store) -> None:
    vecs = fill(store)
    (hits,) = store.search_hybrid_batch("docs", vecs[3][None, :], embed_queries(["the"]), top_k=2)
    assert ids(hits) == ids(store.search("docs", vecs[3], top_k=2))


@BOTH
def test_collection_metadata_round_trips_through_an_alias(store: Store) -> None:
    fill(store)
    store.switch_alias("served", "docs")
    assert store.collection_meta("docs") == {}
    store.update_collection_meta("served", {"fusion": Fusion("weighted", weight=0.3).as_dict()})
    store.update_collection_meta("docs", {"other": 1})
    meta = store.collection_meta("served")
    assert Fusion.from_dict(meta["fusion"]) == Fusion("weighted", weight=0.3)
    assert meta["other"] == 1


def test_both_backends_return_the_same_hybrid_hits(tmp_path: Path) -> None:
    queries = embed_queries(["heart attack", "vitamin infections", "cholesterol liver"])
    results = []
    for store in (QdrantClientStore(path=tmp_path / "local"), EdgeStore(tmp_path / "edge")):
        with store:
            vecs = fill(store)
            q = vecs[[0, 3, 5]] + 0.1
            results.append(
                [
                    [(h.id, round(h.score, 5)) for h in row]
                    for fusion in (Fusion("rrf"), Fusion("dbsf"), Fusion("weighted", weight=0.4))
                    for row in store.search_hybrid_batch("docs", q, queries, top_k=4, fusion=fusion)
                ]
                + [
                    [(h.id, round(h.score, 4)) for h in r]
                    for r in store.search_sparse_batch("docs", queries)
                ]
            )
    assert results[0] == results[1]


def test_fusion_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="weight"):
        Fusion("weighted", weight=1.5)
    with pytest.raises(ValueError, match="method"):
        Fusion("sum")  # type: ignore[arg-type]
    assert Fusion.from_dict(None) == Fusion()
    assert Fusion().override(weight=0.2, k=None) == Fusion(weight=0.2)

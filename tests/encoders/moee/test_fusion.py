"""MoEE ``sum`` similarity served from two named vectors: the fused search equals brute force."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from encoders import Encoder, EncoderConfig
from encoders.config import MoeeConfig
from encoders.moee import MoeeEncoder, sum_similarity
from encoders.testing import tiny_model_folder
from indexer.fusion import fused_search_batch
from indexer.pipeline import index_corpus
from indexer.search import search_batch, search_prepared
from indexer.store import Point, QdrantClientStore, Store

N, HS, RW = 240, 12, 8
WEIGHTS = {"hs": 1.0, "rw": 0.6}


@pytest.fixture(params=["local", "edge"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store
    if request.param == "local":
        s = QdrantClientStore(path=tmp_path / "qdrant")
    else:
        from indexer.edge_store import EdgeStore

        s = EdgeStore(tmp_path / "edge")
    yield s
    s.close()


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def filled(store: Store) -> tuple[Store, list[str], dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    hs = unit(rng.normal(size=(N, HS)))
    # rw anti-correlated with hs along one direction: the two lists disagree at the top
    rw = unit(np.concatenate([-hs[:, :4], rng.normal(size=(N, RW - 4))], axis=1))
    ids = [str(uuid.uuid5(uuid.NAMESPACE_DNS, str(i))) for i in range(N)]
    store.create_collection("moee", {"hs": HS, "rw": RW})
    store.upsert(
        "moee",
        [
            Point(id=ids[i], vectors={"hs": hs[i], "rw": rw[i]}, payload={"group": i % 3})
            for i in range(N)
        ],
    )
    return store, ids, {"hs": hs, "rw": rw}


def brute(docs: dict[str, np.ndarray], queries: dict[str, np.ndarray], keep: np.ndarray) -> list:
    scores = sum_similarity(queries, docs, WEIGHTS["rw"])
    scores[:, ~keep] = -np.inf
    return [np.argsort(-row, kind="stable") for row in scores], scores


@pytest.mark.parametrize("pool", [2, None])
def test_fused_search_equals_brute_force(
    filled: tuple[Store, list[str], dict[str, np.ndarray]], pool: int | None
) -> None:
    store, ids, docs = filled
    rng = np.random.default_rng(1)
    queries = {"hs": unit(rng.normal(size=(6, HS))), "rw": unit(rng.normal(size=(6, RW)))}
    top_k = 7
    depths: list[int] = []
    search = store.search_batch

    def counting(*args: Any, **kwargs: Any) -> Any:
        depths.append(kwargs["top_k"])
        return search(*args, **kwargs)

    store.search_batch = counting  # type: ignore[method-assign]
    hits = fused_search_batch(store, "moee", queries, WEIGHTS, top_k=top_k, pool=pool)
    if pool is not None:  # the lists disagree: the first depth cannot settle every query
        assert max(depths) > top_k
    orders, scores = brute(docs, queries, np.ones(N, dtype=bool))
    for q, got in enumerate(hits):
        expected = orders[q][:top_k]
        assert [h.id for h in got] == [ids[i] for i in expected]
        np.testing.assert_allclose([h.score for h in got], scores[q][expected], atol=1e-5)


def test_fused_search_respects_filters(
    filled: tuple[Store, list[str], dict[str, np.ndarray]],
) -> None:
    store, ids, docs = filled
    rng = np.random.default_rng(2)
    queries = {"hs": unit(rng.normal(size=(3, HS))), "rw": unit(rng.normal(size=(3, RW)))}
    hits = fused_search_batch(store, "moee", queries, WEIGHTS, top_k=5, filter={"group": 1}, pool=3)
    keep = np.arange(N) % 3 == 1
    orders, _ = brute(docs, queries, keep)
    for q, got in enumerate(hits):
        assert [h.id for h in got] == [ids[i] for i in orders[q][:5]]
        assert all(h.payload["group"] == 1 for h in got)


def test_fused_search_rejects_negative_weights(
    filled: tuple[Store, list[str], dict[str, np.ndarray]],
) -> None:
    store, _, docs = filled
    with pytest.raises(ValueError, match="non-negative"):
        fused_search_batch(store, "moee", {"hs": docs["hs"][:1], "rw": docs["rw"][:1]}, {
            "hs": 1.0, "rw": -1.0,
        })  # fmt: skip


DOCS = [
    "Vitamin D deficiency is associated with an increased risk of infection in adults.",
    "The quick brown fox jumps over the lazy dog.",
    "Search engines rank documents by the cosine similarity of their embeddings.",
    "Large language models turn text into vectors when their attention is bidirectional.",
    "Retrieve relevant passages that answer the query about proteins, cells and genes.",
    "Given a scientific claim, retrieve documents that support or refute the claim.",
    "0 1 2 3 4 5 6 7 8 9",
    "proteins fold into shapes",
    "genes are copied before cells divide",
    "a lazy dog sleeps",
]


def test_moee_index_and_search_rank_by_the_sum_similarity(store: Store, tmp_path: Path) -> None:
    """End to end: the pipeline stores ``hs`` + ``rw`` named vectors, the search fuses them,
    and the ranking equals numpy's brute-force cos(hs) + w * cos(rw)."""
    folder = tiny_model_folder(tmp_path / "mixtral", "mixtral")
    config = EncoderConfig(base_model=str(folder), kind="moee", moee=MoeeConfig(rw_weight=0.8))
    enc = Encoder.from_config(config)
    assert isinstance(enc, MoeeEncoder)
    enc.fit_stats(DOCS)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(DOCS))
    )
    report = index_corpus(corpus, "docs", enc, store, progress=False)
    info = store.collection_info("docs")
    assert info.vectors == {"hs": 32, "rw": 2 * 4} and report.chunks == len(DOCS)

    queries = ["proteins and genes", "a dog", "vectors from language models"]
    hits = search_batch(store, enc, "docs", queries, instruction="Retrieve:", top_k=4)
    q = enc.encode_queries_named(queries, "Retrieve:")
    d = enc.encode_named(DOCS)
    scores = sum_similarity(q, d, 0.8)
    for row, got in zip(scores, hits, strict=True):
        expected = np.argsort(-row, kind="stable")[:4]
        assert [h.payload["doc_id"] for h in got] == [f"d{i}" for i in expected]
        np.testing.assert_allclose([h.score for h in got], row[expected], atol=1e-5)
    # the API path: the micro-batcher hands the named vectors to search_prepared
    again = search_prepared(store, enc, store.resolve("docs"), queries, q, mode="dense", top_k=4)
    assert [[h.id for h in r] for r in again] == [[h.id for h in r] for r in hits]
    np.testing.assert_allclose(
        [[h.score for h in r] for r in again], [[h.score for h in r] for r in hits], atol=1e-5
    )

"""Sparse and hybrid retrieval evaluated through Qdrant itself, and the fusion fit.

The documents (``title + " " + text``, as in the dense evaluation) go into a throw-away embedded
Qdrant collection (:class:`~indexer.edge_store.EdgeStore`: the engine that serves embedded
searches) with their dense vectors and their BM25 sparse vectors; queries run through the same
store methods ``/search`` uses (``search_sparse_batch``, ``search_hybrid_batch``), so the scores
are those of the served fusion, not of a re-implementation.

:func:`fit_fusion` picks the fusion for a collection on a **training** split (SciFact
``qrels/train.tsv``): RRF, DBSF and a grid of weighted formulas ``w * cos + (1 - w) * s/(s + c)``
are scored by nDCG@10 and the best is returned with the whole table.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from indexer.evaluation.beir import TOP_K, BeirResult, encode_dataset
from indexer.evaluation.cache import VectorCache
from indexer.evaluation.data import BeirDataset
from indexer.evaluation.metrics import RetrievalScores, score_scored_run
from indexer.sparse import SPARSE_VECTOR, Fusion, embed_documents, embed_queries
from indexer.store import DEFAULT_VECTOR, Point, Store

if TYPE_CHECKING:
    from encoders import Encoder

WEIGHTS = tuple(round(0.05 * i, 2) for i in range(21))
SCALES = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0)
COLLECTION = "eval"


@contextmanager
def qdrant_collection(
    dataset: BeirDataset, doc_vectors: np.ndarray | None, batch: int = 256
) -> Iterator[Store]:
    """An embedded Qdrant collection ``eval`` of the dataset's documents (dense vectors when
    given, BM25 sparse vectors always), deleted afterwards."""
    from indexer.edge_store import EdgeStore

    with tempfile.TemporaryDirectory(prefix="ember-eval-") as root:
        store = EdgeStore(root)
        try:
            dims = {DEFAULT_VECTOR: int(doc_vectors.shape[1])} if doc_vectors is not None else {}
            # a sparse-only collection still needs a named dense vector in this store's contract
            store.create_collection(COLLECTION, dims or {"none": 1}, sparse=(SPARSE_VECTOR,))
            for start in range(0, len(dataset.doc_ids), batch):
                ids = dataset.doc_ids[start : start + batch]
                sparse = embed_documents(dataset.doc_texts[start : start + batch])
                points = []
                for i, doc_id in enumerate(ids):
                    if doc_vectors is not None:
                        vectors = {DEFAULT_VECTOR: doc_vectors[start + i]}
                    else:
                        vectors = {"none": np.ones(1, dtype=np.float32)}
                    points.append(
                        Point(
                            id=str(uuid.uuid5(uuid.NAMESPACE_URL, doc_id)),
                            vectors=vectors,
                            payload={"doc_id": doc_id},
                            sparse={SPARSE_VECTOR: sparse[i]},
                        )
                    )
                store.upsert(COLLECTION, points)
            # indexed as a served collection is (HNSW graph with ef 256, sparse inverted index):
            # unindexed, the fusion grid's 100k+ queries are full scans and take ~10x longer
            store.optimize(COLLECTION)
            yield store
        finally:
            store.close()


def _scores(
    dataset: BeirDataset, qids: Sequence[str], hits: Sequence[Sequence[Any]]
) -> RetrievalScores:
    """trec_eval scores of the engine's hits, with their scores (ties as trec_eval orders them,
    like the dense rows)."""
    run = {
        q: [(h.payload["doc_id"], float(h.score)) for h in row]
        for q, row in zip(qids, hits, strict=True)
    }
    return score_scored_run(run, dataset.qrels)


def evaluate_sparse(dataset: BeirDataset) -> BeirResult:
    """BM25 as Qdrant scores it (qdrant-edge ``Bm25`` vectors, IDF modifier)."""
    qids = dataset.eval_query_ids
    with qdrant_collection(dataset, None) as store:
        hits = store.search_sparse_batch(
            COLLECTION, embed_queries([dataset.queries[q] for q in qids]), top_k=TOP_K
        )
    return BeirResult(
        dataset=dataset.name,
        split=dataset.split,
        system="qdrant-bm25",
        scores=_scores(dataset, qids, hits),
        n_docs=len(dataset.doc_ids),
        details={"mode": "sparse", "bm25": "qdrant-edge Bm25 defaults (k 1.2, b 0.75), IDF"},
    )


def evaluate_hybrid(
    encoder: Encoder,
    dataset: BeirDataset,
    *,
    instruction: str | None,
    fusions: Sequence[Fusion],
    cache: VectorCache | None = None,
    show_progress: bool = False,
) -> list[BeirResult]:
    """One result per fusion, all on one Qdrant collection (vectors encoded once)."""
    qids = dataset.eval_query_ids
    docs, queries = encode_dataset(encoder, dataset, instruction, cache, show_progress)
    sparse = embed_queries([dataset.queries[q] for q in qids])
    out = []
    with qdrant_collection(dataset, docs) as store:
        for fusion in fusions:
            hits = store.search_hybrid_batch(
                COLLECTION, queries, sparse, top_k=TOP_K, fusion=fusion
            )
            out.append(
                BeirResult(
                    dataset=dataset.name,
                    split=dataset.split,
                    system=encoder.config.name,
                    scores=_scores(dataset, qids, hits),
                    n_docs=len(dataset.doc_ids),
                    details={
                        "fingerprint": encoder.fingerprint,
                        "instruction": instruction,
                        "mode": "hybrid",
                        "fusion": fusion.as_dict(),
                    },
                )
            )
    return out


@dataclass(frozen=True)
class FusionFit:
    best: Fusion
    ndcg_at_10: float
    table: list[dict[str, Any]]  # every candidate with its train nDCG@10

    def as_dict(self) -> dict[str, Any]:
        return {"best": self.best.as_dict(), "ndcg@10": self.ndcg_at_10, "table": self.table}


def candidate_fusions(
    weights: Sequence[float] = WEIGHTS, scales: Sequence[float] = SCALES, prefetch: int = 100
) -> list[Fusion]:
    grid = [Fusion("rrf", k=60, prefetch=prefetch), Fusion("dbsf", prefetch=prefetch)]
    grid += [
        Fusion("weighted", weight=w, scale=c, prefetch=prefetch) for w in weights for c in scales
    ]
    return grid


def fit_fusion(
    encoder: Encoder,
    dataset: BeirDataset,
    *,
    instruction: str | None,
    candidates: Sequence[Fusion] | None = None,
    cache: VectorCache | None = None,
    show_progress: bool = False,
) -> FusionFit:
    """The candidate fusion with the best nDCG@10 on ``dataset`` (use a *training* split);
    ties go to the earlier candidate (RRF first)."""
    if dataset.split == "test":
        raise ValueError("fit the fusion on a training split (e.g. --split train), never on test")
    results = evaluate_hybrid(
        encoder,
        dataset,
        instruction=instruction,
        fusions=list(candidates or candidate_fusions()),
        cache=cache,
        show_progress=show_progress,
    )
    table = [
        {**r.details["fusion"], "ndcg@10": r.scores.ndcg_at_10}  # type: ignore[dict-item]
        for r in results
    ]
    best = max(range(len(results)), key=lambda i: (results[i].scores.ndcg_at_10, -i))
    return FusionFit(
        best=Fusion.from_dict(table[best]),
        ndcg_at_10=results[best].scores.ndcg_at_10,
        table=table,
    )

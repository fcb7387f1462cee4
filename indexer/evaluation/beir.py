"""BEIR-style retrieval evaluation: dense (exact cosine) or BM25, scored with nDCG@10, recall@100
and MRR@10 over the queries judged in ``qrels/<split>.tsv``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from indexer.evaluation.cache import VectorCache, encode_cached
from indexer.evaluation.data import BeirDataset
from indexer.evaluation.metrics import RetrievalScores, score_run
from indexer.evaluation.retrieval import BM25Index, BM25Params, exact_top_k

if TYPE_CHECKING:
    from encoders import Encoder

TOP_K = 100  # deepest cut-off any reported metric needs (recall@100)


@dataclass(frozen=True)
class BeirResult:
    dataset: str
    split: str
    system: str
    scores: RetrievalScores
    n_docs: int
    details: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "system": self.system,
            "docs": self.n_docs,
            **self.scores.as_dict(),
            **self.details,
        }


def run_from_indices(
    dataset: BeirDataset, query_ids: list[str], indices: np.ndarray
) -> dict[str, list[str]]:
    return {q: [dataset.doc_ids[j] for j in row] for q, row in zip(query_ids, indices, strict=True)}


def score_dense(
    dataset: BeirDataset, query_vectors: np.ndarray, doc_vectors: np.ndarray
) -> RetrievalScores:
    """Score precomputed vectors: ``query_vectors`` rows follow ``dataset.eval_query_ids``."""
    qids = dataset.eval_query_ids
    if query_vectors.shape[0] != len(qids) or doc_vectors.shape[0] != len(dataset.doc_ids):
        raise ValueError("vector rows do not match the dataset's queries / documents")
    indices, _ = exact_top_k(query_vectors, doc_vectors, TOP_K)
    return score_run(run_from_indices(dataset, qids, indices), dataset.qrels)


def encode_dataset(
    encoder: Encoder,
    dataset: BeirDataset,
    instruction: str | None,
    cache: VectorCache | None = None,
    show_progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Document vectors (instruction-free) and vectors of the judged queries (with
    ``instruction``, at the query max length), through the vector cache."""
    docs = encode_cached(
        encoder, dataset.doc_texts, cache=cache, show_progress=show_progress, desc="documents"
    )
    queries = encode_cached(
        encoder,
        [dataset.queries[q] for q in dataset.eval_query_ids],
        instruction=instruction,
        max_length=encoder.config.query_max_length,
        cache=cache,
        show_progress=show_progress,
        desc="queries",
    )
    return docs, queries


def evaluate_dense(
    encoder: Encoder,
    dataset: BeirDataset,
    *,
    instruction: str | None,
    cache: VectorCache | None = None,
    show_progress: bool = False,
) -> BeirResult:
    """Documents instruction-free (``encode_documents``), queries with ``instruction``
    (``encode_queries``, query max length)."""
    docs, queries = encode_dataset(encoder, dataset, instruction, cache, show_progress)
    return BeirResult(
        dataset=dataset.name,
        split=dataset.split,
        system=encoder.config.name,
        scores=score_dense(dataset, queries, docs),
        n_docs=len(dataset.doc_ids),
        details={"fingerprint": encoder.fingerprint, "instruction": instruction},
    )


def evaluate_bm25(dataset: BeirDataset, params: BM25Params | None = None) -> BeirResult:
    index = BM25Index(dataset.doc_texts, params)
    qids = dataset.eval_query_ids
    indices, _ = index.search([dataset.queries[q] for q in qids], TOP_K)
    scores = score_run(run_from_indices(dataset, qids, indices), dataset.qrels)
    return BeirResult(
        dataset=dataset.name,
        split=dataset.split,
        system="bm25",
        scores=scores,
        n_docs=len(dataset.doc_ids),
        details={"bm25": index.params.describe()},
    )

"""BEIR-style retrieval evaluation: dense (exact cosine) or BM25, scored with nDCG@10, recall@100
and MRR@10 over the queries judged in ``qrels/<split>.tsv``.

Scoring follows BEIR (see :mod:`indexer.evaluation.metrics`): trec_eval on the retrieved scores,
the top ``TOP_K`` per query. On datasets whose queries are also corpus documents (ArguAna,
Quora: :data:`SELF_RETRIEVAL_DATASETS`) a document retrieved for its own id is excluded, and one
extra document is retrieved so that ``TOP_K`` remain. The scored run is kept on the result
(``BeirResult.run``) for ``ember eval beir --run-file``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from indexer.evaluation.cache import VectorCache, encode_cached
from indexer.evaluation.data import BeirDataset
from indexer.evaluation.metrics import (
    RetrievalScores,
    judged_query_ids,
    prepare_run,
    score_scored_run,
)
from indexer.evaluation.retrieval import BM25Index, BM25Params, exact_top_k
from indexer.groups import DOC_ID

if TYPE_CHECKING:
    from encoders import Encoder
    from indexer.store import Hit

TOP_K = 100  # deepest cut-off any reported metric needs (recall@100)
# BEIR datasets whose queries are corpus documents: the self-hit is excluded (ignore_identical_ids)
SELF_RETRIEVAL_DATASETS = frozenset({"arguana", "quora"})

ScoredRunDict = dict[str, list[tuple[str, float]]]


def excludes_self(dataset: BeirDataset) -> bool:
    """ArguAna / Quora (and their ``-mini`` cuts): a query's own document is not a hit."""
    name = dataset.name.lower().removesuffix("-mini").removesuffix("_mini")
    return name in SELF_RETRIEVAL_DATASETS


@dataclass(frozen=True)
class BeirResult:
    dataset: str
    split: str
    system: str
    scores: RetrievalScores
    n_docs: int
    details: dict[str, object] = field(default_factory=dict)
    # the scored run (trec_eval order, self-hits removed, cut to TOP_K); not in as_dict()
    run: ScoredRunDict = field(default_factory=dict, repr=False, compare=False)

    def as_dict(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "system": self.system,
            "docs": self.n_docs,
            **self.scores.as_dict(),
            **self.details,
        }


def scored_run_from_indices(
    dataset: BeirDataset, query_ids: list[str], indices: np.ndarray, scores: np.ndarray
) -> ScoredRunDict:
    return {
        q: [(dataset.doc_ids[j], float(s)) for j, s in zip(row, srow, strict=True)]
        for q, row, srow in zip(query_ids, indices, scores, strict=True)
    }


def scored_run_from_hits(query_ids: Sequence[str], hits: Sequence[Sequence[Hit]]) -> ScoredRunDict:
    """A run of document hits (grouped by ``doc_id``, as ``/search`` returns them)."""
    return {
        q: [(str(h.payload[DOC_ID]), float(h.score)) for h in row]
        for q, row in zip(query_ids, hits, strict=True)
    }


def retrieval_depth(dataset: BeirDataset) -> int:
    return TOP_K + 1 if excludes_self(dataset) else TOP_K


def score_beir(dataset: BeirDataset, run: ScoredRunDict) -> tuple[RetrievalScores, ScoredRunDict]:
    """BEIR scoring of a retrieved run; also returns the run as scored (for a run file)."""
    exclude = excludes_self(dataset)
    scores = score_scored_run(run, dataset.qrels, exclude_self=exclude, depth=TOP_K)
    kept = prepare_run(run, judged_query_ids(dataset.qrels), exclude_self=exclude, depth=TOP_K)
    return scores, kept


def dense_run(
    dataset: BeirDataset, query_vectors: np.ndarray, doc_vectors: np.ndarray
) -> ScoredRunDict:
    """Exact top-k run of precomputed vectors (rows follow ``dataset.eval_query_ids``)."""
    qids = dataset.eval_query_ids
    if query_vectors.shape[0] != len(qids) or doc_vectors.shape[0] != len(dataset.doc_ids):
        raise ValueError("vector rows do not match the dataset's queries / documents")
    indices, scores = exact_top_k(query_vectors, doc_vectors, retrieval_depth(dataset))
    return scored_run_from_indices(dataset, qids, indices, scores)


def score_dense(
    dataset: BeirDataset, query_vectors: np.ndarray, doc_vectors: np.ndarray
) -> RetrievalScores:
    """Score precomputed vectors: ``query_vectors`` rows follow ``dataset.eval_query_ids``."""
    return score_beir(dataset, dense_run(dataset, query_vectors, doc_vectors))[0]


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
        query=True,
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
    scores, run = score_beir(dataset, dense_run(dataset, queries, docs))
    return BeirResult(
        dataset=dataset.name,
        split=dataset.split,
        system=encoder.config.name,
        scores=scores,
        n_docs=len(dataset.doc_ids),
        details={"fingerprint": encoder.fingerprint, "instruction": instruction},
        run=run,
    )


def evaluate_bm25(dataset: BeirDataset, params: BM25Params | None = None) -> BeirResult:
    index = BM25Index(dataset.doc_texts, params)
    qids = dataset.eval_query_ids
    indices, doc_scores = index.search([dataset.queries[q] for q in qids], retrieval_depth(dataset))
    scores, run = score_beir(dataset, scored_run_from_indices(dataset, qids, indices, doc_scores))
    return BeirResult(
        dataset=dataset.name,
        split=dataset.split,
        system="bm25",
        scores=scores,
        n_docs=len(dataset.doc_ids),
        details={"bm25": index.params.describe()},
        run=run,
    )

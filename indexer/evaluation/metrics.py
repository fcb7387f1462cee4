"""Retrieval metrics (trec_eval / pytrec_eval definitions) and Spearman correlation.

For one query with judgements ``qrels`` (doc id -> graded relevance) and a ranked list of doc ids:

- ``nDCG@k`` = DCG@k / IDCG@k with DCG@k = sum_{i=1..k} gain(d_i) / log2(i + 1), gain = the
  judged relevance (linear gain, as trec_eval's ``ndcg_cut``; unjudged and non-positive = 0), and
  IDCG@k the DCG of the judged relevances sorted in decreasing order.
- ``recall@k`` = |relevant in top k| / |relevant|, relevant meaning relevance > 0.
- ``MRR@k`` = 1 / rank of the first relevant document within the top k, 0 if none.

Dataset scores are means over the queries that have at least one relevant document; a query the
run does not answer scores 0 (it is not dropped).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


def _check_ranking(ranked: Sequence[str]) -> None:
    if len(set(ranked)) != len(ranked):
        raise ValueError("a ranking lists the same document twice")


def dcg(gains: Sequence[float]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def ndcg_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    _check_ranking(ranked)
    ideal = dcg(sorted((r for r in qrels.values() if r > 0), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return dcg([max(qrels.get(d, 0), 0) for d in ranked[:k]]) / ideal


def recall_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    _check_ranking(ranked)
    relevant = {d for d, r in qrels.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def mrr_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    _check_ranking(ranked)
    for i, d in enumerate(ranked[:k]):
        if qrels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


@dataclass(frozen=True)
class RetrievalScores:
    """Means over evaluated queries, as fractions in [0, 1]."""

    ndcg_at_10: float
    recall_at_100: float
    mrr_at_10: float
    n_queries: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "ndcg@10": self.ndcg_at_10,
            "recall@100": self.recall_at_100,
            "mrr@10": self.mrr_at_10,
            "queries": self.n_queries,
        }


def score_run(
    run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]
) -> RetrievalScores:
    """Score ``run`` (query id -> ranked doc ids, best first) against ``qrels``."""
    qids = [q for q, rels in qrels.items() if any(r > 0 for r in rels.values())]
    if not qids:
        raise ValueError("no query has a relevant document")
    nd, rc, rr = [], [], []
    for q in qids:
        ranked = list(run.get(q, ()))
        nd.append(ndcg_at_k(ranked, qrels[q], 10))
        rc.append(recall_at_k(ranked, qrels[q], 100))
        rr.append(mrr_at_k(ranked, qrels[q], 10))
    return RetrievalScores(
        ndcg_at_10=float(np.mean(nd)),
        recall_at_100=float(np.mean(rc)),
        mrr_at_10=float(np.mean(rr)),
        n_queries=len(qids),
    )


def rank_average(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    start = 0
    while start < len(x):
        end = start + 1
        while end < len(x) and sorted_x[end] == sorted_x[start]:
            end += 1
        ranks[order[start:end]] = (start + 1 + end) / 2.0  # mean of ranks start+1 .. end
        start = end
    return ranks


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError("pearson needs two 1-D sequences of equal length >= 2")
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    if denom == 0.0:
        raise ValueError("correlation is undefined for a constant sequence")
    return float(a @ b) / denom


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman's rho: Pearson correlation of the tie-averaged ranks."""
    if len(x) != len(y):
        raise ValueError("spearman needs two sequences of equal length")
    return pearson(rank_average(x), rank_average(y))

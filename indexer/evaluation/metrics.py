"""Retrieval metrics through trec_eval's own C code (``pytrec_eval``); STS correlations through
``scipy.stats``.

Why these libraries: every IR paper and the BEIR toolkit score runs with trec_eval (BEIR through
``pytrec_eval``), and the embedding literature reports ``scipy.stats.spearmanr``; a number that
disagrees with them in the third decimal cannot be compared with the published tables. Measured
with ``bench/metrics_choice.py`` on a full-SciFact-sized synthetic run (300 queries x 100
documents, 2 CPU cores shared with a training job):

- ``pytrec-eval-terrier`` 0.5.11: ~12 ms warm, ~16 ms first call; trec_eval itself.
- ``ir-measures`` 0.4.3: ~18 ms warm (pytrec_eval underneath), but its ``RR@10`` cuts the run
  with its own tie rule: with tied scores 32 of 300 queries differ from trec_eval's MRR@10.
- ``ranx`` 0.3.21: ~34 ms warm, 3.6 s first call (numba JIT; 27 s on a cold numba cache) and a
  heavy install (numba, pandas, matplotlib, seaborn, ir-datasets); with tied scores 29 of 300
  queries differ (it orders ties differently).

Without ties all three agree exactly. ``pytrec-eval-terrier`` is trec_eval, is the fastest and
adds one small dependency, so it is the one used here.

Definitions (trec_eval's, for one query with judgements ``qrels``: doc id -> graded relevance):

- ``nDCG@k`` = trec_eval ``ndcg_cut.k``: DCG@k / IDCG@k, DCG@k = sum_{i<=k} gain(d_i) / log2(i+1)
  with linear gain = the judged relevance (unjudged, zero and negative relevance give 0); the
  ideal DCG is over every judged relevant document, retrieved or not.
- ``recall@k`` = trec_eval ``recall.k``: |relevant in top k| / |relevant|.
- ``MRR@k`` = trec_eval ``recip_rank`` on the run cut to its top k: 1 / rank of the first
  relevant document, 0 if none in the top k.

Conventions (BEIR's, with where Ember differs said):

- Relevance levels: a document is relevant when its judged relevance is > 0 (trec_eval's
  default ``relevance_level`` 1); graded levels count as gains in nDCG.
- Ranking order is trec_eval's: by score, descending; equal scores by document id, descending.
  A run given as bare ranked ids (:func:`score_run`) gets strictly decreasing scores, so its own
  order is kept.
- ``exclude_self``: a document whose id equals the query id is removed before anything else
  (BEIR's ``ignore_identical_ids``, needed on ArguAna and Quora where a query is also in the
  corpus). BEIR's ``evaluate`` applies it by default to every dataset; Ember applies it only
  when asked (``beir.py`` asks for ArguAna and Quora), because other datasets' query and
  document ids are separate numberings that may collide by chance.
- Top-k cut before scoring: after exclusion each query's run is cut to its first ``depth``
  documents (default 100, BEIR's ``top_k``), as BEIR retrieves ``top_k`` and then scores.
- Queries without judgements are skipped: the scored queries are those with at least one
  relevant (> 0) judgement; run entries for other queries are ignored. A judged query the run
  does not answer scores 0 (trec_eval ``-c``); BEIR drops such queries instead, which only
  matters for external runs (Ember's own runs answer every query).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

import numpy as np
import pytrec_eval
from scipy import stats

ScoredRun = Mapping[str, Sequence[tuple[str, float]]]
"""Query id -> retrieved (doc id, score) pairs; the order is recomputed from the scores."""
Qrels = Mapping[str, Mapping[str, int]]

DEPTH = 100  # BEIR's top_k: the run is cut to this many documents per query before scoring


def trec_order(docs: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    """``docs`` in trec_eval's order: score descending, equal scores by doc id descending."""
    return sorted(docs, key=lambda d: (d[1], d[0]), reverse=True)


def _ranked_to_scored(ranked: Sequence[str]) -> list[tuple[str, float]]:
    if len(set(ranked)) != len(ranked):
        raise ValueError("a ranking lists the same document twice")
    n = len(ranked)
    return [(d, float(n - i)) for i, d in enumerate(ranked)]


def prepare_run(
    run: ScoredRun,
    qids: Sequence[str],
    *,
    exclude_self: bool = False,
    depth: int | None = DEPTH,
) -> dict[str, list[tuple[str, float]]]:
    """The run as scored: only ``qids``, self-hits removed if asked, trec_eval order, cut to
    ``depth`` (``None``: no cut). Rejects a document listed twice for one query."""
    out: dict[str, list[tuple[str, float]]] = {}
    for q in qids:
        docs = run.get(q)
        if docs is None:
            continue
        if len({d for d, _ in docs}) != len(docs):
            raise ValueError(f"query {q!r}: the run lists the same document twice")
        kept = [(d, float(s)) for d, s in docs if not (exclude_self and d == q)]
        ordered = trec_order(kept)
        out[q] = ordered if depth is None else ordered[:depth]
    return out


def judged_query_ids(qrels: Qrels) -> list[str]:
    """Queries with at least one relevant (> 0) judgement, in qrels order."""
    return [q for q, rels in qrels.items() if any(r > 0 for r in rels.values())]


def per_query(
    run: ScoredRun,
    qrels: Qrels,
    *,
    k: int = 10,
    recall_k: int = 100,
    exclude_self: bool = False,
    depth: int | None = DEPTH,
) -> dict[str, dict[str, float]]:
    """``{qid: {"ndcg@k", "recall@recall_k", "mrr@k"}}`` for every judged query (0 when the run
    does not answer it), by trec_eval."""
    if k < 1 or recall_k < 1:
        raise ValueError("cut-offs must be >= 1")
    qids = judged_query_ids(qrels)
    prepared = prepare_run(run, qids, exclude_self=exclude_self, depth=depth)
    judged = {q: {d: int(r) for d, r in qrels[q].items()} for q in qids}
    # trec_eval drops a query with an empty ranking; it scores 0 below like an unanswered one
    as_dicts = {q: dict(docs) for q, docs in prepared.items() if docs}
    top_k = {q: dict(docs[:k]) for q, docs in prepared.items() if docs}
    ndcg_name, recall_name = f"ndcg_cut_{k}", f"recall_{recall_k}"
    main = pytrec_eval.RelevanceEvaluator(judged, {f"ndcg_cut.{k}", f"recall.{recall_k}"})
    rr = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"})
    main_scores = main.evaluate(as_dicts)
    rr_scores = rr.evaluate(top_k)
    out: dict[str, dict[str, float]] = {}
    for q in qids:
        m = main_scores.get(q, {})
        out[q] = {
            f"ndcg@{k}": float(m.get(ndcg_name, 0.0)),
            f"recall@{recall_k}": float(m.get(recall_name, 0.0)),
            f"mrr@{k}": float(rr_scores.get(q, {}).get("recip_rank", 0.0)),
        }
    return out


class ScoreOptions(TypedDict, total=False):
    """:func:`per_query`'s cut-offs and run options, as keyword arguments of
    :func:`mean_scores` (one list for both)."""

    k: int
    recall_k: int
    exclude_self: bool
    depth: int | None


def mean_scores(run: ScoredRun, qrels: Qrels, **options: Unpack[ScoreOptions]) -> dict[str, float]:
    """Means of :func:`per_query` (same options) over the judged queries, plus ``"queries"``
    (their count)."""
    values = per_query(run, qrels, **options)
    if not values:
        raise ValueError("no query has a relevant document")
    names = next(iter(values.values()))  # ndcg@k, recall@recall_k, mrr@k
    means = {n: float(np.mean([v[n] for v in values.values()])) for n in names}
    return {**means, "queries": len(values)}


def _single(ranked: Sequence[str], qrels: Mapping[str, int], measure: str, k: int) -> float:
    scores = per_query({"q": _ranked_to_scored(ranked)}, {"q": qrels}, k=k, recall_k=k, depth=None)
    return scores["q"][f"{measure}@{k}"] if scores else 0.0


def ndcg_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """nDCG@k of one ranking (best first); 0 when ``qrels`` has no relevant document."""
    return _single(ranked, qrels, "ndcg", k)


def recall_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    return _single(ranked, qrels, "recall", k)


def mrr_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    return _single(ranked, qrels, "mrr", k)


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


def score_scored_run(
    run: ScoredRun, qrels: Qrels, *, exclude_self: bool = False, depth: int | None = DEPTH
) -> RetrievalScores:
    """nDCG@10, recall@100, MRR@10 of ``run`` (query id -> (doc id, score) pairs)."""
    m = mean_scores(run, qrels, exclude_self=exclude_self, depth=depth)
    return RetrievalScores(
        ndcg_at_10=m["ndcg@10"],
        recall_at_100=m["recall@100"],
        mrr_at_10=m["mrr@10"],
        n_queries=int(m["queries"]),
    )


def score_run(
    run: Mapping[str, Sequence[str]],
    qrels: Qrels,
    *,
    exclude_self: bool = False,
    depth: int | None = DEPTH,
) -> RetrievalScores:
    """Score ``run`` (query id -> ranked doc ids, best first; this order is kept)."""
    scored = {q: _ranked_to_scored(list(ranked)) for q, ranked in run.items()}
    return score_scored_run(scored, qrels, exclude_self=exclude_self, depth=depth)


def _pair(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, name: str
) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"{name} needs two 1-D sequences of equal length >= 2")
    if np.all(a == a[0]) or np.all(b == b[0]):
        raise ValueError("correlation is undefined for a constant sequence")
    return a, b


def _correlation(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    name: str,
    test: Callable[[np.ndarray, np.ndarray], Any],
) -> float:
    """The ``statistic`` of scipy's ``test`` on checked sequences; a NaN is an error."""
    a, b = _pair(x, y, name)
    value = float(test(a, b).statistic)
    if math.isnan(value):
        raise ValueError(f"{name} is undefined for these sequences")
    return value


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Pearson's r (``scipy.stats.pearsonr``)."""
    return _correlation(x, y, "pearson", stats.pearsonr)


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman's rho (``scipy.stats.spearmanr``: Pearson of the tie-averaged ranks)."""
    return _correlation(x, y, "spearman", stats.spearmanr)

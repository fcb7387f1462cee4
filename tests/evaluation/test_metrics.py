"""Retrieval metrics and Spearman on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from indexer.evaluation.metrics import (
    mrr_at_k,
    ndcg_at_k,
    rank_average,
    recall_at_k,
    score_run,
    spearman,
)

QRELS = {"a": 2, "b": 1, "c": 0}
RANKED = ["x", "b", "a", "c"]


def test_ndcg_graded_hand_case() -> None:
    # DCG = 0/log2(2) + 1/log2(3) + 2/log2(4) + 0 ; IDCG = 2/log2(2) + 1/log2(3)
    dcg = 1 / math.log2(3) + 2 / 2
    idcg = 2 + 1 / math.log2(3)
    assert ndcg_at_k(RANKED, QRELS, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(RANKED, QRELS, 10) == pytest.approx(0.6199071, abs=1e-6)


def test_ndcg_cutoff_and_perfect() -> None:
    assert ndcg_at_k(RANKED, QRELS, 1) == 0.0
    # top-2 = x, b : DCG@2 = 1/log2(3); IDCG@2 = 2 + 1/log2(3)
    assert ndcg_at_k(RANKED, QRELS, 2) == pytest.approx((1 / math.log2(3)) / (2 + 1 / math.log2(3)))
    assert ndcg_at_k(["a", "b"], QRELS, 10) == pytest.approx(1.0)
    # the wrong order of the two relevant documents is penalised
    assert ndcg_at_k(["b", "a"], QRELS, 10) < 1.0


def test_ndcg_ideal_uses_qrels_not_the_run() -> None:
    # a relevant document the run never returns still counts in the ideal DCG
    assert ndcg_at_k(["a"], {"a": 1, "z": 1}, 10) == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_recall_and_mrr() -> None:
    assert recall_at_k(RANKED, QRELS, 1) == 0.0
    assert recall_at_k(RANKED, QRELS, 2) == 0.5
    assert recall_at_k(RANKED, QRELS, 3) == 1.0
    assert mrr_at_k(RANKED, QRELS, 10) == 0.5
    assert mrr_at_k(RANKED, QRELS, 1) == 0.0
    assert mrr_at_k(["c", "x"], QRELS, 10) == 0.0  # relevance 0 is not relevant


def test_duplicate_documents_rejected() -> None:
    with pytest.raises(ValueError, match="twice"):
        ndcg_at_k(["a", "a"], QRELS, 10)


def test_score_run_means_and_unanswered_queries() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}
    run = {"q1": ["a", "b"], "q3": ["c"]}  # q2 unanswered -> 0; q3 has no relevant -> not scored
    s = score_run(run, qrels)
    assert s.n_queries == 2
    assert s.ndcg_at_10 == pytest.approx(0.5)
    assert s.mrr_at_10 == pytest.approx(0.5)
    assert s.recall_at_100 == pytest.approx(0.5)


def test_rank_average_ties() -> None:
    assert rank_average([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]


def test_spearman_hand_case() -> None:
    # ranks y = [1, 2, 3.5, 5, 3.5]; centred: x [-2,-1,0,1,2], y [-2,-1,.5,2,.5]
    # sum xy = 8, sum x^2 = 10, sum y^2 = 9.5 -> rho = 8 / sqrt(95)
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(95))
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 4, 9]) == pytest.approx(1.0)  # monotone, not linear


def test_spearman_rejects_constant_and_mismatch() -> None:
    with pytest.raises(ValueError):
        spearman([1, 1, 1], [1, 2, 3])
    with pytest.raises(ValueError):
        spearman([1, 2], [1, 2, 3])

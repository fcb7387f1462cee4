"""The metrics library (trec_eval via pytrec_eval, scipy.stats) against hand-computed cases, so
that an upgrade of either cannot drift silently."""

from __future__ import annotations

import math

import pytest

from indexer.evaluation.metrics import (
    mean_scores,
    mrr_at_k,
    ndcg_at_k,
    pearson,
    per_query,
    recall_at_k,
    score_run,
    score_scored_run,
    spearman,
    trec_order,
)

QRELS = {"a": 2, "b": 1, "c": 0}
RANKED = ["x", "b", "a", "c"]


def test_ndcg_graded_hand_case() -> None:
    # linear gain: DCG = 0/log2(2) + 1/log2(3) + 2/log2(4) + 0 ; IDCG = 2/log2(2) + 1/log2(3)
    dcg = 1 / math.log2(3) + 2 / 2
    idcg = 2 + 1 / math.log2(3)
    assert ndcg_at_k(RANKED, QRELS, 10) == pytest.approx(dcg / idcg, abs=1e-12)
    assert ndcg_at_k(RANKED, QRELS, 10) == pytest.approx(0.6199071, abs=1e-6)


def test_ndcg_cutoff_and_perfect() -> None:
    assert ndcg_at_k(RANKED, QRELS, 1) == 0.0
    # top-2 = x, b : DCG@2 = 1/log2(3); IDCG@2 = 2 + 1/log2(3)
    expected = (1 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert ndcg_at_k(RANKED, QRELS, 2) == pytest.approx(expected, abs=1e-12)
    assert ndcg_at_k(["a", "b"], QRELS, 10) == pytest.approx(1.0)
    # the wrong order of the two relevant documents is penalised
    assert ndcg_at_k(["b", "a"], QRELS, 10) < 1.0


def test_ndcg_ideal_uses_qrels_not_the_run() -> None:
    # a relevant document the run never returns still counts in the ideal DCG
    assert ndcg_at_k(["a"], {"a": 1, "z": 1}, 10) == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_negative_relevance_is_zero_gain() -> None:
    # trec_eval: a negative judgement neither costs nor earns gain, and is not relevant
    assert ndcg_at_k(["n", "a"], {"a": 1, "n": -1}, 10) == pytest.approx(1 / math.log2(3))
    assert mrr_at_k(["n", "a"], {"a": 1, "n": -1}, 10) == 0.5


def test_recall_and_mrr() -> None:
    assert recall_at_k(RANKED, QRELS, 1) == 0.0
    assert recall_at_k(RANKED, QRELS, 2) == 0.5
    assert recall_at_k(RANKED, QRELS, 3) == 1.0
    assert mrr_at_k(RANKED, QRELS, 10) == 0.5
    assert mrr_at_k(RANKED, QRELS, 1) == 0.0
    assert mrr_at_k(["c", "x"], QRELS, 10) == 0.0  # relevance 0 is not relevant


def test_no_relevant_document_and_empty_qrels_score_zero() -> None:
    for qrels in ({"c": 0}, {}):
        assert ndcg_at_k(["c"], qrels, 10) == 0.0
        assert recall_at_k(["c"], qrels, 10) == 0.0
        assert mrr_at_k(["c"], qrels, 10) == 0.0
    assert ndcg_at_k([], {"a": 1}, 10) == 0.0  # an empty ranking


def test_duplicate_documents_rejected() -> None:
    with pytest.raises(ValueError, match="twice"):
        ndcg_at_k(["a", "a"], QRELS, 10)
    with pytest.raises(ValueError, match="twice"):
        score_scored_run({"q": [("a", 1.0), ("a", 0.5)]}, {"q": {"a": 1}})


def test_score_run_means_and_unanswered_queries() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}, "q4": {}}
    # q2 unanswered -> 0 (trec_eval -c); q3 (no relevant) and q4 (no judgements) are skipped;
    # q5 is not judged at all: its run entry is ignored
    run = {"q1": ["a", "b"], "q3": ["c"], "q4": ["a"], "q5": ["a"]}
    s = score_run(run, qrels)
    assert s.n_queries == 2
    assert s.ndcg_at_10 == pytest.approx(0.5)
    assert s.mrr_at_10 == pytest.approx(0.5)
    assert s.recall_at_100 == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no query has a relevant document"):
        score_run(run, {"q3": {"c": 0}})


def test_ties_follow_trec_eval_doc_id_order() -> None:
    # equal scores are ordered by doc id, descending: "b" before "a"
    docs = [("a", 1.0), ("b", 1.0), ("c", 2.0)]
    assert [d for d, _ in trec_order(docs)] == ["c", "b", "a"]
    qrels = {"q": {"a": 1}}
    s = per_query({"q": docs}, qrels, k=10)["q"]
    assert s["mrr@10"] == pytest.approx(1 / 3)
    assert s["ndcg@10"] == pytest.approx(1 / math.log2(4))
    # the cut happens after ordering: at k=2 the tied "a" (rank 3) is out
    assert per_query({"q": docs}, qrels, k=2)["q"]["mrr@2"] == 0.0


def test_top_k_cut_before_scoring() -> None:
    # 101 retrieved documents, the only relevant one at rank 101: cut away at depth 100
    docs = [(f"d{i:03d}", float(200 - i)) for i in range(101)]
    qrels = {"q": {"d100": 1}}
    assert per_query({"q": docs}, qrels, recall_k=1000)["q"]["recall@1000"] == 0.0
    assert per_query({"q": docs}, qrels, recall_k=1000, depth=None)["q"]["recall@1000"] == 1.0


def test_exclude_self() -> None:
    # ArguAna style: the query's own document comes first and is not a hit
    run = {"q1": [("q1", 0.99), ("d1", 0.5), ("d2", 0.4)]}
    qrels = {"q1": {"d2": 1, "q1": 1}}
    kept = score_scored_run(run, qrels, exclude_self=True)
    # after exclusion: d1, d2 -> MRR 1/2; q1 stays in the ideal (judged) but is never retrieved
    assert kept.mrr_at_10 == pytest.approx(0.5)
    assert kept.recall_at_100 == pytest.approx(0.5)
    assert score_scored_run(run, qrels).mrr_at_10 == 1.0


def test_mean_scores_other_cut_offs() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    run = {"q1": [("x", 3.0), ("a", 2.0)], "q2": [("b", 1.0)]}
    m = mean_scores(run, qrels, k=1, recall_k=2)
    assert m == {"ndcg@1": 0.5, "recall@2": 1.0, "mrr@1": 0.5, "queries": 2}


def test_spearman_hand_case() -> None:
    # ranks y = [1, 2, 3.5, 5, 3.5]; centred: x [-2,-1,0,1,2], y [-2,-1,.5,2,.5]
    # sum xy = 8, sum x^2 = 10, sum y^2 = 9.5 -> rho = 8 / sqrt(95)
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(95))
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 4, 9]) == pytest.approx(1.0)  # monotone, not linear


def test_pearson_hand_case() -> None:
    # x centred [-1, 0, 1], y centred [-2, 1, 1]: r = 3 / sqrt(2 * 6)
    assert pearson([1, 2, 3], [0, 3, 3]) == pytest.approx(3 / math.sqrt(12))


def test_correlations_reject_constant_and_mismatch() -> None:
    for fn in (spearman, pearson):
        with pytest.raises(ValueError):
            fn([1, 1, 1], [1, 2, 3])
        with pytest.raises(ValueError):
            fn([1, 2], [1, 2, 3])

"""The harness on the bundled real models: the Echo prefix test (default) and the published
all-MiniLM-L6-v2 reference figures (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from encoders import Encoder, load_encoder
from indexer.evaluation.data import load_beir, load_echo_triples, load_sts
from indexer.evaluation.echo import echo_prefix_test
from indexer.evaluation.sts import evaluate_sts


@pytest.fixture(scope="module")
def minilm() -> Encoder:
    return load_encoder("minilm")


def test_echo_prefix_test_causal_smollm2_is_at_chance(shared_data: Path) -> None:
    triples = load_echo_triples(shared_data / "echo_toy_triples_paper_subset.json")
    enc = load_encoder("smollm2")  # causal attention
    r = echo_prefix_test(enc, triples, poolings=["mean", "last_token"], full_sentence=False)
    for mode in ("mean", "last_token"):
        assert (r[mode].probes, r[mode].ties, r[mode].accuracy) == (11, 11, 0.5)
        assert r[mode].skipped == 17


def test_echo_prefix_test_bidirectional_minilm_sees_the_suffix(
    shared_data: Path, minilm: Encoder
) -> None:
    triples = load_echo_triples(shared_data / "echo_toy_triples_paper_subset.json")
    r = echo_prefix_test(minilm, triples)["mean"]
    assert r.ties == 0
    assert r.accuracy >= 8 / 11  # measured 10/11; a trained bidirectional encoder beats chance


@pytest.mark.slow
def test_minilm_sts_b_matches_reference(shared_data: Path, minilm: Encoder) -> None:
    """all-MiniLM-L6-v2 STS-B test Spearman is 82.0 (sentence-transformers / MTEB)."""
    pairs = load_sts(shared_data / "sts" / "STSBenchmark" / "stsbenchmark")
    result = evaluate_sts(minilm, pairs, instruction=None)
    assert abs(100 * result.spearman - 82.0) <= 0.5


@pytest.mark.slow
def test_minilm_scifact_matches_reference(shared_data: Path, minilm: Encoder) -> None:
    """all-MiniLM-L6-v2 SciFact nDCG@10 is 64.5 (BEIR / MTEB); ~20 min on 2 CPU cores."""
    from indexer.evaluation.beir import evaluate_dense

    result = evaluate_dense(minilm, load_beir(shared_data / "beir" / "scifact"), instruction=None)
    assert abs(100 * result.scores.ndcg_at_10 - 64.5) <= 1.0

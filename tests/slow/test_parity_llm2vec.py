"""Parity with the reference implementation, llm2vec 0.2.3, run from its own venv (.venv-ref).

Slow (a few minutes): builds ``.venv-ref`` with ``bench/ref_env.sh`` if missing, then runs
``bench/parity_llm2vec.py`` once for the module. Requirement: cosine >= 0.99999 per sentence.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import parity_llm2vec as parity  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return parity.run_parity(tmp_path_factory.mktemp("parity"))


def test_both_stacks_tokenise_identically(result: dict[str, Any]) -> None:
    """The tokenizer files written for (or rewritten for) transformers 4.44 give the same ids."""
    bad = [r for r in parity.rows_of(result) if not r.ids_identical]
    assert not bad, [(r.model, r.attention, r.pooling, r.instruction) for r in bad]
    counts = result["extras"]["smollm2-135m (real)"]["instructed_counts"]
    assert counts["sentences"] > 1000  # every SciFact query
    assert counts["ids_identical"] == counts["sentences"]


def test_model_path_matches_llm2vec(result: dict[str, Any]) -> None:
    """Attention switch, positions and pooling maths: Ember's hidden states pooled over
    llm2vec's own token set match for every model, mode, pooling and padding side."""
    rows = parity.rows_of(result)
    assert len(rows) == 3 * 12 * 2 + 6 * 2
    bad = [r for r in rows if r.min_cosine_same_tokens < parity.THRESHOLD]
    assert not bad, [(r.model, r.attention, r.pooling, r.min_cosine_same_tokens) for r in bad]


def test_vectors_match_llm2vec_end_to_end(result: dict[str, Any]) -> None:
    """Ember.encode vs LLM2Vec.encode, every sentence >= 0.99999, except where llm2vec's own
    text-alone token count misplaces the instruction boundary (byte-level BPE; Ember is exact)."""
    failures = []
    for r in parity.rows_of(result):
        excused = {
            m["sentence"] for m in r.count_mismatches if m["cause"] == parity.INSTRUCTION_BOUNDARY
        }
        for i, cos in enumerate(r.cosines):
            if cos < parity.THRESHOLD and i not in excused:
                cause = next((m["cause"] for m in r.count_mismatches if m["sentence"] == i), "-")
                failures.append(
                    f"{r.model} {r.attention} {r.pooling} instr={r.instruction} "
                    f"pad={r.padding_side} sentence {i}: cos {cos:.6f} (pooled-set cause: {cause})"
                )
    assert not failures, "\n".join(failures)


def test_every_pooled_count_difference_is_the_instruction_boundary(result: dict[str, Any]) -> None:
    causes = {m["cause"] for r in parity.rows_of(result) for m in r.count_mismatches}
    counts = result["extras"]["smollm2-135m (real)"]["instructed_counts"]
    causes |= set(counts["causes"])
    assert causes <= {parity.INSTRUCTION_BOUNDARY}, causes


def test_cosine_detects_an_attention_mode_difference(result: dict[str, Any]) -> None:
    """Negative control: bidirectional vs causal vectors of the same tiny model are far apart,
    so a broken attention switch could not hide under the 0.99999 threshold."""
    for case in parity.TINY_CASES:
        assert result["extras"][case.name]["max_cosine_bidirectional_vs_causal"] < 0.99


def test_minilm_matches_sentence_transformers(result: dict[str, Any]) -> None:
    st = result["minilm_vs_sentence_transformers"]
    assert st["min_cosine_plain"] >= parity.THRESHOLD
    assert st["min_cosine_prompt_excluded"] >= parity.THRESHOLD

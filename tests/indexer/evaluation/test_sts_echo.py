"""STS Spearman on a tiny fixture, and the Echo prefix-test mechanics on tiny models."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from encoders import Encoder
from encoders.config import EncoderConfig
from encoders.testing import tiny_model_folder
from indexer.evaluation.data import EchoTriple, load_sts
from indexer.evaluation.echo import echo_prefix_test, prefix_vectors, shared_word_prefix
from indexer.evaluation.metrics import spearman
from indexer.evaluation.sts import evaluate_sts

TRIPLES = [
    EchoTriple(
        id="t1",
        query="The cat sat on the mat, dreaming of birds and warm sunshine",
        positive="The cat sat on the mat, imagining birds and sunlight",
        negative="The cat sat on the mat, but is too lazy to dream",
    ),
    EchoTriple(
        id="t2",
        query="Search engines rank documents by cosine similarity of embeddings",
        positive="Search engines rank documents by vector similarity",
        negative="Search engines rank documents by date only",
    ),
    EchoTriple(  # no shared prefix: not a probe
        id="t3",
        query="Proteins fold in cells",
        positive="In cells, proteins fold",
        negative="Dogs run",
    ),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_folder(tmp_path_factory.mktemp("echo") / "m", "llama")


def make(folder: Path, attention: str, pooling: str = "mean") -> Encoder:
    cfg = EncoderConfig(base_model=str(folder), attention=attention, pooling=pooling)  # type: ignore[arg-type]
    return Encoder.from_config(cfg)


def test_sts_spearman_on_fixture(folder: Path, tmp_path: Path) -> None:
    f = tmp_path / "sts-test.csv"
    f.write_text(
        "g\tf\t2012\t1\t5.0\tA cat sat.\tA cat sat.\n"
        "g\tf\t2012\t2\t0.0\tThe quick brown fox.\tThe lazy dog.\n"
        "g\tf\t2012\t3\t0.0\tSearch engines rank documents.\tVitamin D helps.\n"
        "g\tf\t2012\t4\t0.0\tProteins and genes.\tThe lazy dog jumps.\n"
    )
    enc = make(folder, "bidirectional")
    pairs = load_sts(f)
    result = evaluate_sts(enc, pairs, instruction=None)
    a = enc.encode(pairs.first)
    b = enc.encode(pairs.second)
    sims = np.sum(a * b, axis=1)
    assert result.spearman == pytest.approx(spearman(pairs.scores, sims))
    # the identical pair (gold 5) has cosine 1, above the three others (gold 0, tied):
    # ranks gold [4, 2, 2, 2] vs cosine [4, {1, 2, 3}] whatever the order of the others;
    # centred: [1.5, -.5, -.5, -.5] . [1.5, {-1.5, -.5, .5}] = 3, norms^2 3 and 5
    assert result.spearman == pytest.approx(3 / math.sqrt(15))
    assert result.n_pairs == 4


def test_shared_word_prefix() -> None:
    assert shared_word_prefix([TRIPLES[0].query, TRIPLES[0].positive, TRIPLES[0].negative]) == (
        "The cat sat on the mat,"
    )
    assert shared_word_prefix(["summer, especially", "summer, specially"]) == "summer,"
    assert shared_word_prefix([TRIPLES[2].query, TRIPLES[2].positive]) == ""
    assert shared_word_prefix(["a  b c", "a b d"]) == "a  b"  # spacing of the first text kept


def test_prefix_equal_to_sentence_is_the_plain_embedding(folder: Path) -> None:
    enc = make(folder, "bidirectional")
    texts = [TRIPLES[0].query, TRIPLES[1].negative]
    got = prefix_vectors(enc, texts, texts, ["mean"])["mean"]
    np.testing.assert_allclose(got, enc.encode(texts), atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "weighted_mean", "last_token"])
def test_causal_prefix_representation_ignores_what_follows(folder: Path, pooling: str) -> None:
    enc = make(folder, "causal", pooling)
    for instruction in (None, "Retrieve semantically similar text:"):
        results = echo_prefix_test(enc, TRIPLES, instruction=instruction, poolings=[pooling])
        r = results[pooling]
        assert (r.ties, r.wins, r.losses, r.skipped) == (2, 0, 0, 1)
        assert r.accuracy == 0.5
    t = TRIPLES[0]
    prefix = shared_word_prefix([t.query, t.positive, t.negative])
    v = prefix_vectors(enc, [t.query, t.positive, t.negative], [prefix] * 3, [pooling])[pooling]
    assert np.abs(v - v[0]).max() < 1e-5


def test_bidirectional_prefix_representation_sees_the_rest(folder: Path) -> None:
    enc = make(folder, "bidirectional")
    t = TRIPLES[0]
    prefix = shared_word_prefix([t.query, t.positive, t.negative])
    v = prefix_vectors(enc, [t.query, t.positive, t.negative], [prefix] * 3)["mean"]
    assert np.abs(v - v[0]).max() > 1e-3
    r = echo_prefix_test(enc, TRIPLES)["mean"]
    assert r.ties == 0 and r.wins + r.losses == 2
    assert set(r.full_sentence) == {"all"} and len(r.per_triple) == 2


def test_no_probe_is_an_error(folder: Path) -> None:
    with pytest.raises(ValueError, match="no triple has a shared word prefix"):
        echo_prefix_test(make(folder, "causal"), [TRIPLES[2]])

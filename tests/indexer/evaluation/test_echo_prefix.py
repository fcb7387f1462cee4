"""The Echo prefix test on echo encoders (tiny random Llama): the prefix is pooled inside the
second copy, where causal attention has already seen the whole sentence."""

from __future__ import annotations

from pathlib import Path

import pytest

from encoders import Encoder, EncoderConfig
from encoders.testing import tiny_model_folder
from indexer.evaluation.data import EchoTriple
from indexer.evaluation.echo import echo_prefix_test, prefix_vectors

TRIPLES = [
    EchoTriple(
        id=str(i),
        query=f"The quick brown fox {a}",
        positive=f"The quick brown fox {b}",
        negative=f"The quick brown fox {c}",
    )
    for i, (a, b, c) in enumerate(
        [
            ("jumps over the lazy dog", "leaps over the lazy dog", "rank documents by cosine"),
            ("keeps running all day", "keeps running all night", "vitamin d deficiency"),
            ("turns text into vectors", "turns words into vectors", "proteins, cells and genes"),
        ]
    )
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_folder(tmp_path_factory.mktemp("tiny") / "llama", "llama")


def make(folder: Path, echo: bool) -> Encoder:
    return Encoder.from_config(
        EncoderConfig(base_model=str(folder), attention="causal", pooling="mean", echo=echo)
    )


def test_causal_prefixes_tie_and_echo_prefixes_see_the_rest(folder: Path) -> None:
    plain = echo_prefix_test(make(folder, echo=False), TRIPLES, full_sentence=False)["mean"]
    assert plain.ties == len(TRIPLES)  # causal: A cannot see what follows it
    echo = echo_prefix_test(make(folder, echo=True), TRIPLES, full_sentence=False)["mean"]
    assert echo.ties == 0 and echo.probes == len(TRIPLES)


def test_echo_prefix_tokens_are_the_prefix_inside_the_second_copy(folder: Path) -> None:
    enc = make(folder, echo=True)
    sentence, prefix = TRIPLES[0].query, "The quick brown fox"
    [item] = enc.tokenize([sentence], None, 512)
    [alone] = enc.tokenize([prefix], None, 512)
    pooled = item.ids[item.text_start : item.text_start + len(alone.ids) - alone.text_start]
    assert enc.tokenizer.decode(pooled).strip() == prefix
    vectors = prefix_vectors(enc, [sentence, prefix + " and more"], [prefix, prefix])["mean"]
    assert abs(float(vectors[0] @ vectors[1])) < 0.9999  # the copies differ after A: A differs

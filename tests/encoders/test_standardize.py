"""Corpus-fitted standardisation (and whitening) for any encoder: fit once, apply to queries and
documents, part of the config and fingerprint, batch-invariant, reproduced on reload."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ember.cli import cli
from encoders import Encoder, EncoderConfig
from encoders.registry import PRESETS
from encoders.standardize import StandardizationError, fit_encoder
from encoders.testing import tiny_model_folder
from encoders.vectors import l2_normalize
from indexer.evaluation.cache import VectorCache, encode_cached

DOCS = [
    "Vitamin D deficiency is associated with infection.",
    "The quick brown fox jumps over the lazy dog.",
    "Search engines rank documents by cosine similarity.",
    "proteins, cells and genes",
    "Large language models turn text into vectors when attention is bidirectional.",
    "Given a scientific claim, retrieve documents that support or refute the claim.",
    "0 1 2 3 4 5 6 7 8 9",
    "a b c d e f g",
] * 2


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_folder(tmp_path_factory.mktemp("tiny-std") / "llama", "llama")


@pytest.fixture(scope="module")
def base(model_dir: Path) -> EncoderConfig:
    return EncoderConfig(name="tiny", base_model=str(model_dir), attention="causal")


@pytest.fixture(scope="module")
def fitted(base: EncoderConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("std") / "enc"
    fit_encoder(Encoder.from_config(base), DOCS, out, source="test docs")
    return out


def test_fit_stores_the_statistics_of_unit_document_vectors(
    base: EncoderConfig, fitted: Path
) -> None:
    config = EncoderConfig.load(fitted)
    stats = config.standardize
    assert stats is not None and stats.samples == len(DOCS) and stats.source == "test docs"
    raw = Encoder.from_config(base).encode(DOCS, normalize=False)
    unit = l2_normalize(raw)
    np.testing.assert_allclose(stats.mean, unit.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(stats.std, unit.std(axis=0), atol=1e-6)
    # Every vector: unit -> (x - mean) / std -> unit; queries get the same transform.
    encoder = Encoder.load(fitted)
    expected = l2_normalize((unit - np.asarray(stats.mean)) / np.asarray(stats.std))
    np.testing.assert_allclose(encoder.encode(DOCS), expected, atol=1e-5)
    q_raw = Encoder.from_config(base).encode(DOCS[:3], "Find:", normalize=False)
    q_exp = l2_normalize((l2_normalize(q_raw) - np.asarray(stats.mean)) / np.asarray(stats.std))
    np.testing.assert_allclose(encoder.encode_queries(DOCS[:3], "Find:"), q_exp, atol=1e-5)
    # Centred: the mean standardised document is ~0 before the final normalisation.
    assert np.abs(((unit - np.asarray(stats.mean)) / np.asarray(stats.std)).mean(0)).max() < 1e-4


def test_standardised_vectors_are_batch_invariant(fitted: Path) -> None:
    config = EncoderConfig.load(fitted)
    one = Encoder.from_config(config.model_copy(update={"max_batch_size": 1})).encode(DOCS)
    many = Encoder.from_config(config.model_copy(update={"max_batch_size": 16})).encode(DOCS)
    assert np.abs(one - many).max() < 1e-5


def test_statistics_are_in_the_fingerprint_and_old_fingerprints_stay(
    base: EncoderConfig, fitted: Path
) -> None:
    assert EncoderConfig.load(fitted).fingerprint() != base.fingerprint()
    # Configs without statistics hash as they did before the option existed (collections and
    # caches built earlier stay valid): the values of the presets at that commit.
    before = {
        "smollm2": "9c6127abebd8",
        "smollm2-bi": "34cbe381a665",
        "smollm2-echo": "48b64d5838f2",
        "minilm": "ba1b2bd8060c",
    }
    assert {k: PRESETS[k].fingerprint() for k in before} == before


def test_whitening_decorrelates_and_is_checked(base: EncoderConfig, tmp_path: Path) -> None:
    out = tmp_path / "white"
    config = fit_encoder(Encoder.from_config(base), DOCS * 3, out, whiten=True)
    stats = config.standardize
    assert stats is not None and stats.whitening and (out / "whitening.npy").is_file()
    saved = json.loads((out / "encoder_config.json").read_text())
    assert saved["standardize"]["whitening"] == "whitening.npy"  # relative: the folder moves
    encoder = Encoder.load(out)
    z = encoder.encode(DOCS * 3, normalize=False)
    cov = np.cov(z, rowvar=False)
    # 8 distinct texts span 7 centred directions: each gets unit variance
    top = np.sort(np.linalg.eigvalsh(cov))[-7:]
    np.testing.assert_allclose(top, 1.0, atol=0.05)
    np.save(out / "whitening.npy", np.eye(len(stats.mean), dtype=np.float32))
    with pytest.raises(StandardizationError, match="sha256"):
        Encoder.load(out).encode(DOCS[:2])


def test_eval_cache_shares_the_unstandardised_vectors(
    base: EncoderConfig, fitted: Path, tmp_path: Path
) -> None:
    cache = VectorCache(tmp_path / "cache")
    plain = encode_cached(Encoder.from_config(base), DOCS, cache=cache)
    encoder = Encoder.load(fitted)
    via_cache = encode_cached(encoder, DOCS, cache=cache)
    np.testing.assert_allclose(via_cache, encoder.encode(DOCS), atol=1e-5)
    np.testing.assert_allclose(plain, Encoder.from_config(base).encode(DOCS), atol=1e-6)
    fingerprints = {p.name for p in (tmp_path / "cache").iterdir()}
    assert encoder.fingerprint not in fingerprints and base.fingerprint() in fingerprints


def test_moee_configs_refuse_the_generic_statistics(base: EncoderConfig, fitted: Path) -> None:
    stats = EncoderConfig.load(fitted).standardize
    with pytest.raises(ValueError, match="moee"):
        EncoderConfig(base_model=base.base_model, kind="moee", standardize=stats)


def test_fit_stats_cli(model_dir: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"_id": str(i), "title": "T", "text": t}) + "\n" for i, t in enumerate(DOCS)
        )
    )
    enc_dir = tmp_path / "enc"
    EncoderConfig(name="tiny", base_model=str(model_dir), attention="causal").save(enc_dir)
    out = tmp_path / "std"
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "fit-stats",
            str(enc_dir),
            str(corpus),
            "--out",
            str(out),
            "--limit",
            "10",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    config = EncoderConfig.load(out)
    assert config.name == "tiny-std" and config.standardize and config.standardize.samples == 10
    bad = runner.invoke(cli, ["fit-stats", "no-such-encoder", str(corpus), "--out", str(out)])
    assert bad.exit_code != 0 and "ENCODER" in bad.output and "Traceback" not in bad.output

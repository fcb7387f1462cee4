"""Vector cache: hits, resumable chunks, and the one-pass pooling variants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from encoders import Encoder
from encoders.testing import tiny_encoder
from indexer.evaluation.cache import (
    VectorCache,
    encode_cached,
    encode_variants_cached,
    pool_variants,
)

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Vitamin D deficiency is associated with infection.",
    "Search engines rank documents.",
    "a b c",
    "Large language models turn text into vectors when their attention is bidirectional.",
]


@pytest.fixture(scope="module")
def causal(tmp_path_factory: pytest.TempPathFactory) -> Encoder:
    enc: Encoder = tiny_encoder(tmp_path_factory.mktemp("c") / "m", "llama", attention="causal")
    return enc


def _forbid(encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> np.ndarray:
        raise AssertionError("encoder called although the vectors are cached")

    monkeypatch.setattr(encoder, "encode", boom)
    monkeypatch.setattr(encoder, "hidden_states", boom)


def test_encode_cached_hits(
    causal: Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = VectorCache(tmp_path)
    first = encode_cached(causal, TEXTS, cache=cache)
    np.testing.assert_allclose(first, causal.encode(TEXTS), atol=1e-6)
    assert len(list((tmp_path / causal.fingerprint).glob("*.npy"))) == 1
    _forbid(causal, monkeypatch)
    np.testing.assert_array_equal(encode_cached(causal, TEXTS, cache=cache), first)
    with pytest.raises(AssertionError, match="cached"):  # another instruction is another key
        encode_cached(causal, TEXTS, instruction="Retrieve:", cache=cache)


def test_interrupted_run_resumes_from_saved_chunks(
    causal: Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = VectorCache(tmp_path)
    real = causal.encode
    calls: list[int] = []

    def flaky(texts: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        calls.append(len(texts))
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(causal, "encode", flaky)
    with pytest.raises(RuntimeError, match="killed"):
        encode_cached(causal, TEXTS, cache=cache, chunk=2)
    calls.clear()

    def counting(texts: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        calls.append(len(texts))
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(causal, "encode", counting)
    out = encode_cached(causal, TEXTS, cache=cache, chunk=2)
    assert calls == [2, 1]  # the first chunk came from disk
    np.testing.assert_allclose(out, real(TEXTS), atol=1e-6)
    assert not list((tmp_path / causal.fingerprint).glob("*.part-*"))  # parts cleaned up


def test_pool_variants_equal_encode_per_config(causal: Encoder) -> None:
    modes = ["last_token", "mean", "weighted_mean", "first_token"]
    variants = pool_variants(causal, TEXTS, modes, instruction="Retrieve passages:")
    for mode in modes:
        other = Encoder(
            causal.config.model_copy(update={"pooling": mode}), causal.model, causal.tokenizer
        )
        expected = other.encode(TEXTS, instruction="Retrieve passages:")
        np.testing.assert_allclose(variants[mode], expected, atol=1e-5)
    assert not np.allclose(variants["mean"], variants["last_token"], atol=1e-3)


def test_variants_share_the_cache_with_single_configs(
    causal: Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = VectorCache(tmp_path)
    got = encode_variants_cached(causal, TEXTS, ["mean", "last_token"], cache=cache)
    other = Encoder(
        causal.config.model_copy(update={"pooling": "last_token"}), causal.model, causal.tokenizer
    )
    _forbid(other, monkeypatch)
    np.testing.assert_array_equal(encode_cached(other, TEXTS, cache=cache), got["last_token"])


def test_stale_chunks_of_another_chunk_size_are_removed(causal: Encoder, tmp_path: Path) -> None:
    from indexer.evaluation.cache import texts_key

    key = texts_key(TEXTS, prefix="", max_length=causal.config.max_length, dtype="float32")
    stale = tmp_path / causal.fingerprint / f"{key}.part-999"
    stale.mkdir(parents=True)
    (stale / "000000.npy").write_bytes(b"old")
    encode_cached(causal, TEXTS, cache=VectorCache(tmp_path), chunk=2)
    assert (tmp_path / causal.fingerprint / f"{key}.npy").is_file()
    assert not stale.exists()

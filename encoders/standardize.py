"""Corpus-fitted standardisation for every encoder kind but MoEE (which has its own).

Fit once on a sample of the corpus's documents (instruction-free), store the statistics in the
encoder config (:class:`encoders.config.Standardization`), and every later vector, query or
document, is ``unit(pooled) -> (x - mean) / std [-> @ W] -> unit``. Measured on SmolLM2's causal
mean (the MoEE ``hs only`` ablation, bench/RESULTS.md): 30.2 -> 59.4 nDCG@10 on scifact-mini
with statistics from 256 out-of-domain sentences, no training.

Whitening (optional) rotates the standardised vectors by ``W = U diag(1 / sqrt(l + eps))`` from
the eigendecomposition of their covariance (PCA whitening, all dimensions kept), so the
dimensions are also decorrelated.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from encoders.config import EncoderConfig, Standardization
from encoders.errors import EmberError
from encoders.vectors import l2_normalize, moments, standardize

if TYPE_CHECKING:
    from encoders.encoder import Encoder

WHITENING_FILE = "whitening.npy"
WHITEN_EPS = 1e-4

_matrices: dict[str, np.ndarray] = {}
_lock = threading.Lock()


class StandardizationError(EmberError, ValueError):
    """Statistics that do not fit the encoder, or a whitening file that is missing or changed."""


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def whitening_matrix(stats: Standardization) -> np.ndarray | None:
    """The whitening matrix (loaded once per file and checksum), or None."""
    if stats.whitening is None:
        return None
    path = Path(stats.whitening)
    if not path.is_file():
        raise StandardizationError(f"whitening matrix {path} is missing")
    info = path.stat()  # a rewritten file is checked again
    key = f"{path}:{stats.whitening_sha256}:{info.st_mtime_ns}:{info.st_size}"
    with _lock:
        if key not in _matrices:
            if file_sha256(path) != stats.whitening_sha256:
                raise StandardizationError(
                    f"whitening matrix {path} does not match its sha256 in encoder_config.json "
                    "(refit with `ember fit-stats`)"
                )
            matrix = np.load(path).astype(np.float32)
            if matrix.shape != (len(stats.mean), len(stats.mean)):
                raise StandardizationError(f"whitening matrix {path} has shape {matrix.shape}")
            _matrices[key] = matrix
        return _matrices[key]


def apply(stats: Standardization, vectors: np.ndarray) -> np.ndarray:
    """Raw pooled vectors -> standardised (and whitened) vectors, not yet normalised."""
    if vectors.shape[1] != len(stats.mean):
        raise StandardizationError(
            f"standardisation statistics are for {len(stats.mean)} dimensions, the encoder "
            f"gives {vectors.shape[1]}"
        )
    out = standardize(l2_normalize(vectors), stats.mean, stats.std)
    matrix = whitening_matrix(stats)
    return out if matrix is None else (out @ matrix).astype(np.float32)


def fit(
    raw: np.ndarray, *, whiten: bool = False, out_dir: Path | None = None, source: str = ""
) -> Standardization:
    """Statistics from raw pooled document vectors ``raw`` [N, D] (N >= 2). With ``whiten``,
    the matrix is written to ``out_dir / whitening.npy`` (the path is stored relative)."""
    if raw.ndim != 2 or raw.shape[0] < 2:
        raise StandardizationError("fitting needs at least 2 texts to estimate a spread")
    unit = l2_normalize(raw)
    mean, std = moments(unit)
    whitening = sha = None
    if whiten:
        if out_dir is None:
            raise StandardizationError("whitening needs a folder for its matrix")
        z = standardize(unit, mean, std).astype(np.float64)
        cov = np.cov(z, rowvar=False)
        eigval, eigvec = np.linalg.eigh(cov)
        matrix = (eigvec / np.sqrt(np.maximum(eigval, 0.0) + WHITEN_EPS)).astype(np.float32)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / WHITENING_FILE
        np.save(path, matrix)
        whitening, sha = WHITENING_FILE, file_sha256(path)
    return Standardization(
        mean=mean,
        std=std,
        whitening=whitening,
        whitening_sha256=sha,
        samples=int(raw.shape[0]),
        source=source,
    )


def fit_encoder(
    encoder: Encoder,
    texts: Sequence[str],
    out: Path,
    *,
    whiten: bool = False,
    source: str = "",
    show_progress: bool = False,
) -> EncoderConfig:
    """Fit on ``texts`` (documents, no instruction) with ``encoder`` (an :class:`Encoder`
    without statistics) and write the standardised encoder's config to ``out``."""
    config = encoder.config
    if config.kind == "moee":
        raise StandardizationError(
            "moee encoders standardise hs and rw themselves: use `ember moee fit-stats`"
        )
    base = config.model_copy(update={"standardize": None})
    raw = encoder.encode_pooled(texts, show_progress=show_progress)
    stats = fit(raw, whiten=whiten, out_dir=out, source=source)
    standardized = base.model_copy(update={"standardize": stats})
    standardized.save(out)
    return EncoderConfig.load(out)

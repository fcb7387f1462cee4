"""Small numpy helpers every vector path shares (one copy each)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

STD_FLOOR = 1e-6


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def standardize(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Centre and scale each dimension with fitted statistics, float32."""
    return ((x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)).astype(
        np.float32
    )


def moments(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-dimension mean and standard deviation (float64 accumulation, std floored)."""
    x64 = np.asarray(x, dtype=np.float64)
    mean = x64.mean(axis=0)
    std = np.maximum(x64.std(axis=0), STD_FLOOR)
    return mean.astype(np.float32).tolist(), std.astype(np.float32).tolist()

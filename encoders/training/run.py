"""What a training run is set up with: :class:`TrainingError`, the seeds, the device, the
autocast dtype and the learning-rate schedule."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import torch

from encoders.errors import EmberError
from encoders.hardware import has_fast_bf16


class TrainingError(EmberError, RuntimeError):
    """A run that cannot start or continue (bad output folder, incompatible checkpoint)."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"--device {name}: CUDA is not available")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run: None (fp32), or bf16 when asked or, for ``auto``, when the
    device has fast bf16 (an AVX2-only CPU would run bf16 several times slower than fp32)."""
    if precision == "bf16" or (precision == "auto" and has_fast_bf16(device)):
        return torch.bfloat16
    return None


def warmup_linear(total: int, warmup: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor

"""One attention switch for every decoder architecture.

Bidirectional mode sets ``is_causal = False`` on every module that has the attribute (the flash
and sdpa paths read it) and feeds the model a padding-only 4D additive mask, which transformers 5
passes through its mask builders untouched. No modeling files are copied and no per-architecture
classes exist; ``tests/encoders/test_attention.py`` proves the switch for each supported family.
"""

from __future__ import annotations

import torch
from torch import nn

from encoders.errors import EmberError


class UnsupportedArchitectureError(EmberError, RuntimeError):
    pass


def set_bidirectional(model: nn.Module, bidirectional: bool = True) -> int:
    """Flip ``is_causal`` on all attention modules; returns how many were switched."""
    switched = 0
    for module in model.modules():
        if hasattr(module, "is_causal") and isinstance(module.is_causal, bool):
            module.is_causal = not bidirectional
            switched += 1
    if switched == 0:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} has no attention module with an `is_causal` attribute"
        )
    return switched


def padding_mask_4d(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, L] 0/1 mask -> [B, 1, L, L] additive mask: every query sees every non-pad key.

    Padded query rows still see the real keys, so no softmax row is empty (no NaNs).
    """
    keep = attention_mask[:, None, None, :].to(torch.bool)
    mask = torch.zeros(keep.shape, dtype=dtype, device=attention_mask.device)
    mask = mask.masked_fill(~keep, torch.finfo(dtype).min)
    return mask.expand(-1, 1, attention_mask.shape[1], -1)

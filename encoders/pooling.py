"""Pooling over token states. Padding is always masked; instruction tokens are excluded by
``pool_mask`` (built from token offsets in :mod:`encoders.encoder`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

POOLING_MODES = ("mean", "weighted_mean", "last_token", "first_token")


def pool(
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    pool_mask: torch.Tensor,
    mode: str,
) -> torch.Tensor:
    """Pool ``hidden`` [B, L, H].

    ``attention_mask`` marks real tokens; ``pool_mask`` marks the real tokens that belong to the
    text (not the instruction). ``mean`` and ``weighted_mean`` use ``pool_mask``; ``last_token``
    and ``first_token`` pick the last / first real token of the whole sequence.
    """
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    if mode == "mean":
        weights = pool_mask.float()
    elif mode == "weighted_mean":
        # Position-weighted mean (SGPT): the k-th text token gets weight k.
        weights = (torch.cumsum(pool_mask, dim=1) * pool_mask).float()
    elif mode == "last_token":
        idx = (attention_mask * positions).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]
    elif mode == "first_token":
        idx = attention_mask.to(torch.int64).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]
    else:
        raise ValueError(f"unknown pooling mode {mode!r}; choose from {POOLING_MODES}")
    total = weights.sum(dim=1, keepdim=True).clamp(min=1e-9)
    # Summed in fp32 whatever the model's dtype (bf16 weights or autocast): a mean over hundreds
    # of bf16 states would lose the small differences between texts. Elementwise ops, so
    # autocast leaves them in fp32.
    return (hidden.float() * (weights / total).unsqueeze(-1)).sum(dim=1)


def pool_start(offsets: Sequence[tuple[int, int]], char_start: int) -> int:
    """The first pooled token: the first whose character span ends past ``char_start`` (the
    end of the instruction or prompt), special tokens' empty ``(0, 0)`` spans skipped;
    ``len(offsets)`` when truncation left nothing to pool."""
    return next(
        (i for i, (a, b) in enumerate(offsets) if b > char_start and (a, b) != (0, 0)),
        len(offsets),
    )


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``states`` [B, T, H] over positions where ``mask`` [B, T] is 1 (zeros if none),
    in the states' dtype (what the trainable poolers and LLaRA's prompt embeddings train on)."""
    weights = mask.to(states.dtype)
    total = weights.sum(dim=1, keepdim=True).clamp(min=1.0)
    return torch.einsum("bth,bt->bh", states, weights) / total

"""Gradient caching (Gao et al., 2021): large contrastive batches in small memory.

1. Embed every group (queries, documents) in chunks without building a graph, recording the RNG
   state before each chunk.
2. Compute the loss on detached representations and backpropagate it to them only: the cached
   gradient d loss / d rep of every text.
3. Re-embed each chunk with the graph (same RNG state, so the same dropout masks) and
   backpropagate its cached gradient into the parameters; one chunk's graph lives at a time.

The parameter gradients equal those of the full batch (tests/encoders/training/test_gradcache.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")
Embed = Callable[[Sequence[T]], torch.Tensor]
Loss = Callable[[list[torch.Tensor]], torch.Tensor]


def _rng_state() -> tuple[torch.Tensor, list[torch.Tensor]]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, list[torch.Tensor]]) -> None:
    torch.set_rng_state(state[0])
    if state[1]:
        torch.cuda.set_rng_state_all(state[1])


def full_batch_backward(embed: Embed[T], groups: Sequence[Sequence[T]], loss_fn: Loss) -> float:
    """Reference path: one graph over the whole batch."""
    reps = [embed(group) for group in groups]
    loss = loss_fn(reps)
    loss.backward()
    return float(loss.detach())


def cached_backward(
    embed: Embed[T],
    groups: Sequence[Sequence[T]],
    loss_fn: Loss,
    chunk_size: int | None,
) -> float:
    """Backpropagate ``loss_fn([embed(g) for g in groups])`` chunk by chunk; returns the loss.

    ``chunk_size`` None (or at least the largest group) falls back to the full-batch path.
    """
    if chunk_size is None or chunk_size >= max(len(g) for g in groups):
        return full_batch_backward(embed, groups, loss_fn)
    records: list[list[tuple[int, tuple[torch.Tensor, list[torch.Tensor]]]]] = []
    reps: list[torch.Tensor] = []
    with torch.no_grad():
        for group in groups:
            chunks = []
            parts = []
            for start in range(0, len(group), chunk_size):
                state = _rng_state()
                parts.append(embed(group[start : start + chunk_size]))
                chunks.append((start, state))
            records.append(chunks)
            reps.append(torch.cat(parts))
    after = _rng_state()
    leaves = [r.detach().requires_grad_(True) for r in reps]
    loss = loss_fn(leaves)
    grads = torch.autograd.grad(loss, leaves)
    for group, chunks, grad in zip(groups, records, grads, strict=True):
        for start, state in chunks:
            _set_rng_state(state)
            rep = embed(group[start : start + chunk_size])
            rep.backward(gradient=grad[start : start + rep.shape[0]])
    _set_rng_state(after)
    return float(loss.detach())

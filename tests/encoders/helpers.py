"""What several encoder tests share: texts of very different lengths and the batch-invariance
check (DESIGN.md: a vector does not depend on batch size, neighbours or order)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from encoders import Encoder

VARIED_TEXTS = [
    "Vitamin D deficiency is associated with infection.",
    "a",
    "The quick brown fox jumps over the lazy dog and keeps running through the field all day.",
    "Search engines rank documents by cosine similarity.",
    "proteins, cells and genes",
    "Large language models turn text into vectors when attention is bidirectional. " * 3,
]


def assert_batch_invariant(
    reference: Encoder, others: Sequence[Encoder], texts: Sequence[str], seed: int
) -> None:
    """Every encoder in ``others`` gives ``reference``'s vectors for ``texts`` (max |diff| <
    1e-5), and the first of them does for the texts shuffled (by ``seed``)."""
    expected = reference.encode(texts)
    for other in others:
        assert np.abs(other.encode(texts) - expected).max() < 1e-5
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    shuffled = others[0].encode([texts[i] for i in order])
    assert np.abs(shuffled - expected[order]).max() < 1e-5

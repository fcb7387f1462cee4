"""STS evaluation: Spearman correlation between gold scores and the cosine of the two sentences.

As in LLM2Vec's symmetric tasks, the same instruction (if any) is applied to both sentences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from encoders.vectors import l2_normalize
from indexer.evaluation.cache import VectorCache, encode_cached
from indexer.evaluation.data import StsPairs
from indexer.evaluation.metrics import pearson, spearman

if TYPE_CHECKING:
    from encoders import Encoder


@dataclass(frozen=True)
class StsResult:
    spearman: float
    pearson: float
    n_pairs: int
    system: str
    instruction: str | None

    def as_dict(self) -> dict[str, object]:
        return {
            "spearman": self.spearman,
            "pearson": self.pearson,
            "pairs": self.n_pairs,
            "system": self.system,
            "instruction": self.instruction,
        }


def unique_sentences(pairs: StsPairs) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Distinct sentences (each encoded once) and the row of each pair side in that list."""
    index: dict[str, int] = {}
    for s in [*pairs.first, *pairs.second]:
        index.setdefault(s, len(index))
    first = np.array([index[s] for s in pairs.first])
    second = np.array([index[s] for s in pairs.second])
    return list(index), first, second


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = l2_normalize(a), l2_normalize(b)
    return np.einsum("ij,ij->i", a.astype(np.float64), b.astype(np.float64))


def score_sts(gold: Sequence[float], first: np.ndarray, second: np.ndarray) -> tuple[float, float]:
    """(Spearman, Pearson) between ``gold`` and the row-wise cosine of ``first``/``second``."""
    sims = cosine_rows(first, second)
    return spearman(gold, sims), pearson(gold, sims)


def evaluate_sts(
    encoder: Encoder,
    pairs: StsPairs,
    *,
    instruction: str | None,
    cache: VectorCache | None = None,
    show_progress: bool = False,
) -> StsResult:
    sentences, a, b = unique_sentences(pairs)
    vectors = encode_cached(
        encoder,
        sentences,
        instruction=instruction,
        cache=cache,
        show_progress=show_progress,
        desc="sentences",
    )
    rho, r = score_sts(pairs.scores, vectors[a], vectors[b])
    return StsResult(
        spearman=rho,
        pearson=r,
        n_pairs=len(pairs),
        system=encoder.config.name,
        instruction=instruction,
    )

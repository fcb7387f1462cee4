"""Exact dense retrieval (cosine via matmul) and the BM25 baseline (bm25s).

Evaluation does not go through Qdrant: exact top-k over all documents is the reference any
approximate index is measured against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from encoders.vectors import l2_normalize


def exact_top_k(
    queries: np.ndarray, docs: np.ndarray, k: int, *, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` documents per query by cosine similarity.

    Returns ``(indices, scores)``, both ``[n_queries, min(k, n_docs)]``, best first; equal scores
    are ordered by document index.
    """
    if queries.ndim != 2 or docs.ndim != 2 or queries.shape[1] != docs.shape[1]:
        raise ValueError(f"shape mismatch: queries {queries.shape}, documents {docs.shape}")
    if k < 1:
        raise ValueError("k must be >= 1")
    q = l2_normalize(queries)
    d = l2_normalize(docs)
    k = min(k, d.shape[0])
    all_idx = np.empty((q.shape[0], k), dtype=np.int64)
    all_scores = np.empty((q.shape[0], k), dtype=np.float32)
    for start in range(0, q.shape[0], chunk):
        sims = q[start : start + chunk] @ d.T
        if k < sims.shape[1]:
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(sims.shape[1]), sims.shape).copy()
        for row in range(sims.shape[0]):
            cand = part[row]
            vals = sims[row, cand]
            order = np.lexsort((cand, -vals))
            all_idx[start + row] = cand[order]
            all_scores[start + row] = vals[order]
    return all_idx, all_scores


@dataclass(frozen=True)
class BM25Params:
    """Pyserini's BEIR defaults: Lucene BM25 (k1 0.9, b 0.4), English stopwords, Snowball stems."""

    k1: float = 0.9
    b: float = 0.4
    method: str = "lucene"
    stopwords: str = "en"
    stemmer: str | None = "english"

    def describe(self) -> str:
        stem = f"{self.stemmer} stemmer" if self.stemmer else "no stemming"
        return f"bm25s {self.method} k1={self.k1} b={self.b}, stopwords={self.stopwords}, {stem}"


class BM25Index:
    """A bm25s index over ``texts``; :meth:`search` returns document indices, best first."""

    def __init__(self, texts: Sequence[str], params: BM25Params | None = None):
        import bm25s

        self.params = params or BM25Params()
        self._stemmer = self._make_stemmer(self.params.stemmer)
        self.n_docs = len(texts)
        tokens = bm25s.tokenize(
            list(texts),
            stopwords=self.params.stopwords,
            stemmer=self._stemmer,
            show_progress=False,
        )
        self._retriever = bm25s.BM25(method=self.params.method, k1=self.params.k1, b=self.params.b)
        self._retriever.index(tokens, show_progress=False)

    @staticmethod
    def _make_stemmer(language: str | None) -> object | None:
        if language is None:
            return None
        try:
            import Stemmer  # PyStemmer
        except ImportError as exc:  # pragma: no cover - PyStemmer is a declared dependency
            raise RuntimeError("BM25 stemming needs PyStemmer (pip install PyStemmer)") from exc
        return Stemmer.Stemmer(language)

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        import bm25s

        k = min(k, self.n_docs)
        tokens = bm25s.tokenize(
            list(queries),
            stopwords=self.params.stopwords,
            stemmer=self._stemmer,
            show_progress=False,
        )
        idx, scores = self._retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return np.asarray(idx, dtype=np.int64), np.asarray(scores, dtype=np.float32)

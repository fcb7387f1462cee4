"""BM25 sparse vectors and the search modes built on them (dense | sparse | hybrid).

Every build stores, next to its dense vector(s), a sparse vector ``"bm25"`` per chunk: the term
frequencies that qdrant-edge's own ``Bm25`` embedder computes (its tokenizer, English stemmer
and stopwords, with BM25's ``k``/``b`` length saturation; queries get one weight per distinct
term). The collection declares the sparse vector with Qdrant's **IDF modifier**, so the engine
keeps the document frequencies and turns the dot product into BM25 at query time: nothing here
computes an IDF or a BM25 score.

The same client-side vectors go to both backends, the embedded edge store
(``EdgeSparseVectorParams(modifier=Modifier.Idf)``) and a Qdrant server / qdrant-client local
mode (``SparseVectorParams(modifier=Modifier.IDF)``). Server-side inference (``models.Document``
with ``"qdrant/bm25"``) would need the server's inference service or fastembed's model download,
and neither is reachable offline; computing the vectors in-process keeps one tested contract
and one tokenizer on every backend.

Hybrid search is one Query API call: a dense and a sparse *prefetch* (each with the request's
filter), then a fusion done by the engine:

* ``rrf``: reciprocal rank fusion, ``sum 1 / (k + rank)`` over both lists (Qdrant counts ranks
  from 0), with ``k`` set explicitly (60, the RRF paper's value; qdrant-client's default is 2);
* ``dbsf``: distribution-based score fusion (each list's scores normalised by mean +- 3 std);
* ``weighted``: a formula query ``w * cos + (1 - w) * s / (s + c)``, the cosine of the dense
  prefetch plus the BM25 score squashed into [0, 1) by its saturation constant ``c``. ``w`` and
  ``c`` are fitted on a training split (``ember eval fit-fusion``, never on test queries) and
  stored with the collection; a request may override them.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from encoders.errors import EmberError

SPARSE_VECTOR = "bm25"
MODES = ("dense", "sparse", "hybrid")
FUSIONS = ("rrf", "dbsf", "weighted")
Mode = Literal["dense", "sparse", "hybrid"]
FusionMethod = Literal["rrf", "dbsf", "weighted"]
FUSION_META_KEY = "fusion"  # collection metadata key of the fitted fusion


@dataclass(frozen=True)
class SparseVector:
    indices: tuple[int, ...]
    values: tuple[float, ...]

    def __bool__(self) -> bool:
        return bool(self.indices)


@dataclass(frozen=True)
class Fusion:
    """How a hybrid query combines its dense and sparse prefetches."""

    method: FusionMethod = "dbsf"  # beat RRF on SciFact train for every encoder measured
    k: int = 60  # rrf
    weight: float = 0.5  # weighted: share of the dense cosine
    scale: float = 10.0  # weighted: BM25 saturation constant c in s / (s + c)
    prefetch: int = 100  # candidates per prefetch (at least top_k)

    def __post_init__(self) -> None:
        if self.method not in FUSIONS:
            raise ValueError(f"fusion: unknown method {self.method!r} (use {', '.join(FUSIONS)})")
        if self.k < 1:
            raise ValueError(f"fusion k must be >= 1, got {self.k}")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"fusion weight must be in [0, 1], got {self.weight}")
        if not self.scale > 0:
            raise ValueError(f"fusion scale must be > 0, got {self.scale}")
        if self.prefetch < 1:
            raise ValueError(f"fusion prefetch must be >= 1, got {self.prefetch}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Fusion:
        if not data:
            return cls()
        known = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        return cls(**known)

    def override(self, **changes: Any) -> Fusion:
        """This fusion with the non-None ``changes`` applied (a request's overrides)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


class SparseUnavailableError(EmberError, LookupError):
    """The collection has no BM25 sparse vectors (built before hybrid search existed)."""

    status = 409

    def __init__(self, collection: str, mode: str) -> None:
        super().__init__(
            f"collection {collection!r} was built without BM25 sparse vectors, so it cannot be "
            f"searched in {mode!r} mode; reindex it (ember index ... or POST /jobs/index) or "
            "search it with mode 'dense'"
        )
        self.collection = collection
        self.mode = mode


def check_mode(mode: str) -> Mode:
    if mode not in MODES:
        raise ValueError(f"mode: unknown search mode {mode!r} (use {', '.join(MODES)})")
    return mode  # type: ignore[return-value]


@functools.lru_cache(maxsize=1)
def _bm25() -> Any:
    import qdrant_edge

    # qdrant-edge's defaults: k 1.2, b 0.75, avg_len 256, English stemmer and stopwords
    return qdrant_edge.Bm25(qdrant_edge.Bm25Config(language="english"))


def _convert(vec: Any) -> SparseVector:
    return SparseVector(tuple(int(i) for i in vec.indices), tuple(float(v) for v in vec.values))


def embed_documents(texts: Sequence[str]) -> list[SparseVector]:
    """BM25 term-frequency vectors of documents (IDF is applied by the engine)."""
    model = _bm25()
    return [_convert(model.embed_document(t)) for t in texts]


def embed_queries(texts: Sequence[str]) -> list[SparseVector]:
    """BM25 query vectors (weight 1 per distinct term; no instruction: BM25 matches words)."""
    model = _bm25()
    return [_convert(model.embed_query(t)) for t in texts]

"""The store's data model: hits, points, collection listings, store errors and the checks every
backend runs on names, vectors and payload indexes before it talks to its engine.

A collection's metadata may hold a build record under :data:`BUILD_META_KEY` (written by
:mod:`indexer.pipeline`): ``{"complete": false, ...}`` while a build is being written. Such a
collection is listed with ``complete=False`` and refuses searches (:class:`BuildIncompleteError`);
a collection without the record (built before it existed) counts as complete.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, TypeVar

import numpy as np

from encoders.errors import EmberError
from indexer.sparse import SparseVector

D = TypeVar("D")  # an engine's dense vector config
S = TypeVar("S")  # an engine's sparse vector config

DEFAULT_VECTOR = "dense"
PAYLOAD_INDEX_TYPES = ("keyword", "integer", "float", "bool", "datetime", "text", "uuid")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
# collection metadata key of the build record (see :func:`build_complete`)
BUILD_META_KEY = "ember_build"  # the build's owner and whether it finished (indexer.builds)
# what an index job built it from: encoder spec + fingerprint, corpus, chunking (indexer.sources;
# read by the API to load the encoder of a collection it serves)
SOURCE_META_KEY = "ember_source"


class StoreError(EmberError, RuntimeError):
    """A store operation failed for a reason the user can act on (missing collection, lock)."""


class StoreLockedError(StoreError):
    """An embedded store folder is held by another process."""

    def __init__(self, path: object) -> None:
        super().__init__(
            f"embedded store {path} is locked by another process; embedded mode is one process "
            "per folder (run the API and workers together, or use a Qdrant server: "
            "EMBER_QDRANT_URL)"
        )


class CollectionNotFoundError(StoreError, KeyError):
    status = 404

    def __init__(self, name: str) -> None:
        super().__init__(f"collection or alias {name!r} not found")
        self.name = name

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class CollectionExistsError(StoreError, ValueError):
    status = 409

    def __init__(self, name: str) -> None:
        super().__init__(f"collection or alias {name!r} already exists")
        self.name = name


class BuildIncompleteError(StoreError):
    """The collection is a build that has not finished: it holds only part of its points."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"collection {name!r} is a build that has not finished (partial, not served); "
            "search its alias, or wait until the build completes"
        )
        self.name = name


def build_complete(meta: Mapping[str, Any] | None) -> bool:
    """False only for a collection whose build record says it is not finished; a collection
    without a record (made before builds were marked, or not by the pipeline) is complete."""
    record = (meta or {}).get(BUILD_META_KEY)
    return not isinstance(record, Mapping) or record.get("complete") is not False


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]
    # a document hit (grouped search): its best chunks, best first (the first is the hit itself)
    passages: tuple[Hit, ...] = ()

    @classmethod
    def scored(cls, point: Any) -> Hit:
        """The hit of an engine's scored point (``id``, ``score``, ``payload``)."""
        return cls(id=str(point.id), score=float(point.score), payload=dict(point.payload or {}))


@dataclass(frozen=True)
class Point:
    id: str
    vectors: dict[str, np.ndarray]  # vector name -> 1-D float32
    payload: dict[str, Any]
    sparse: dict[str, SparseVector] = dataclass_field(
        default_factory=dict
    )  # name -> BM25 term weights


@dataclass(frozen=True)
class CollectionSpec:
    """A new collection's checked layout (:meth:`indexer.store.Store.create_collection`)."""

    vectors: dict[str, int]  # dense vector name -> dimension (cosine)
    sparse: tuple[str, ...]  # sparse vector names (IDF modifier)
    payload_indexes: dict[str, str]  # field -> payload index type
    meta: Mapping[str, Any] | None  # the collection's metadata (the build record, ...)

    def engine_vectors(
        self, dense: Callable[[int], D], sparse: Callable[[], S]
    ) -> tuple[dict[str, D], dict[str, S] | None]:
        """The engine's vector configs: ``dense(dimension)`` per dense name (cosine) and
        ``sparse()`` per sparse name (IDF), None when there are no sparse vectors."""
        dense_configs = {name: dense(dim) for name, dim in self.vectors.items()}
        return dense_configs, {name: sparse() for name in self.sparse} or None


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    aliases: list[str]
    points: int
    vectors: dict[str, int]  # vector name -> dimension
    sparse: tuple[str, ...] = ()  # sparse vector names (IDF modifier); () for old builds
    complete: bool = True  # False: a build still being written (or abandoned); never served


def check_name(name: str, what: str = "collection") -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"invalid {what} name {name!r}: use letters, digits, '_', '-', '.' "
            "(start with a letter or digit, at most 200 characters)"
        )
    return name


def check_vectors(vectors: Mapping[str, int]) -> dict[str, int]:
    if not vectors:
        raise ValueError("a collection needs at least one named vector")
    out: dict[str, int] = {}
    for name, dim in vectors.items():
        check_name(name, "vector")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"vector {name!r}: dimension must be a positive integer, got {dim!r}")
        out[name] = dim
    return out


def check_sparse(names: Sequence[str], vectors: Mapping[str, int]) -> tuple[str, ...]:
    out = tuple(check_name(n, "sparse vector") for n in names)
    clash = [n for n in out if n in vectors]
    if clash or len(set(out)) != len(out):
        raise ValueError(f"sparse vector {(clash or list(out))[0]!r}: name used twice")
    return out


def check_search_args(top_k: int, vectors: np.ndarray) -> np.ndarray:
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"vectors must be 2-D, got shape {arr.shape}")
    return arr


def check_payload_indexes(indexes: Mapping[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for field, kind in (indexes or {}).items():
        if kind not in PAYLOAD_INDEX_TYPES:
            raise ValueError(
                f"payload index {field!r}: unknown type {kind!r} "
                f"(use one of {', '.join(PAYLOAD_INDEX_TYPES)})"
            )
        out[field] = kind
    return out


def as_vector(vector: np.ndarray | Sequence[float], name: str = DEFAULT_VECTOR) -> list[float]:
    arr = np.asarray(vector, dtype=np.float32)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"vector {name!r} must be 1-D and non-empty, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"vector {name!r} contains NaN or infinity")
    return arr.tolist()

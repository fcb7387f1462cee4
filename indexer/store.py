"""Vector store: one small interface over Qdrant, three ways to run it.

* :class:`QdrantClientStore` over ``qdrant-client``: embedded *local mode* (a folder on disk,
  exact search in Python) or a *server* URL (production: HNSW, payload indexes, many processes).
* :class:`indexer.edge_store.EdgeStore` over ``qdrant-edge-py``: the real Qdrant engine
  in-process (HNSW, payload indexes, WAL), one shard folder per collection.

Every collection uses cosine distance and *named* vectors (``"dense"`` by default, several when an
encoder produces several, e.g. MoEE ``hs`` + ``rw``). Point ids are UUID strings. Collections are
versioned (``<name>__<fingerprint>__v<N>``, see :mod:`indexer.pipeline`) and served through an
alias that :meth:`Store.switch_alias` moves atomically.

Filters are plain dicts so callers never import Qdrant types::

    {"source": "pubmed"}                 exact match (str, int, bool; floats match exactly too)
    {"lang": ["en", "de"]}               match any of the values
    {"year": {"gte": 2000, "lt": 2010}}  range (gt, gte, lt, lte)

Several keys are ANDed. An unknown operator or an unsupported value raises ``ValueError`` naming
the field.

A collection's metadata may hold a build record under :data:`BUILD_META_KEY` (written by
:mod:`indexer.pipeline`): ``{"complete": false, ...}`` while a build is being written. Such a
collection is listed with ``complete=False`` and refuses searches (:class:`BuildIncompleteError`);
a collection without the record (built before it existed) counts as complete.

Embedded stores lock their folder to one process (qdrant-client takes a ``portalocker`` lock on
``<folder>/.lock``; the edge store takes an ``fcntl`` lock and qdrant-edge locks each shard). In
embedded mode the API and the workers therefore share the store by running in one process (the
default: jobs run in-process when no broker is configured); with a broker use a Qdrant server.
"""

from __future__ import annotations

import math
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from encoders.errors import EmberError
from indexer.groups import (
    GROWTH,
    PASSAGES,
    check_page,
    first_fetch,
    page_of_chunks,
    page_of_groups,
    rank_key,
)
from indexer.sparse import SPARSE_VECTOR, Fusion, SparseVector

if TYPE_CHECKING:
    pass

DEFAULT_VECTOR = "dense"
RANGE_OPERATORS = ("gt", "gte", "lt", "lte")
PAYLOAD_INDEX_TYPES = ("keyword", "integer", "float", "bool", "datetime", "text", "uuid")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
# collection metadata key of the build record (see :func:`build_complete`)
BUILD_META_KEY = "ember_build"  # the build's owner and whether it finished (indexer.builds)
# what an index job built it from: encoder spec + fingerprint, corpus, chunking (indexer.sources;
# read by the API to load the encoder of a collection it serves)
SOURCE_META_KEY = "ember_source"


class StoreError(EmberError, RuntimeError):
    """A store operation failed for a reason the user can act on (missing collection, lock)."""


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


@dataclass(frozen=True)
class Point:
    id: str
    vectors: dict[str, np.ndarray]  # vector name -> 1-D float32
    payload: dict[str, Any]
    sparse: dict[str, SparseVector] = dataclass_field(
        default_factory=dict
    )  # name -> BM25 term weights


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    aliases: list[str]
    points: int
    vectors: dict[str, int]  # vector name -> dimension
    sparse: tuple[str, ...] = ()  # sparse vector names (IDF modifier); () for old builds
    complete: bool = True  # False: a build still being written (or abandoned); never served


# ---- filters ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Condition:
    """One parsed filter condition: ``kind`` is ``eq``, ``any`` or ``range``."""

    field: str
    kind: str
    value: Any


def _scalar(field: str, value: Any) -> str | int | bool | float:
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise ValueError(
        f"filter field {field!r}: expected a string, number or boolean, got {type(value).__name__}"
    )


def parse_filter(filter: Mapping[str, Any] | None) -> list[Condition]:
    """Validate a filter dict and turn it into conditions (ANDed). Raises ``ValueError``."""
    if not filter:
        return []
    if not isinstance(filter, Mapping):
        raise ValueError(f"filter must be an object of field -> condition, got {filter!r}")
    conditions: list[Condition] = []
    for field, spec in filter.items():
        if not isinstance(field, str) or not field:
            raise ValueError(f"filter field names must be non-empty strings, got {field!r}")
        if isinstance(spec, Mapping):
            unknown = [op for op in spec if op not in RANGE_OPERATORS]
            if unknown:
                raise ValueError(
                    f"filter field {field!r}: unknown operator {unknown[0]!r} "
                    f"(use one of {', '.join(RANGE_OPERATORS)})"
                )
            if not spec:
                raise ValueError(f"filter field {field!r}: empty range")
            bounds: dict[str, float] = {}
            for op, bound in spec.items():
                if isinstance(bound, bool) or not isinstance(bound, int | float):
                    raise ValueError(f"filter field {field!r}: {op} needs a number, got {bound!r}")
                bounds[op] = float(bound)
            conditions.append(Condition(field, "range", bounds))
        elif isinstance(spec, list | tuple):
            if not spec:
                raise ValueError(f"filter field {field!r}: empty list of values")
            values = [_scalar(field, v) for v in spec]
            conditions.append(Condition(field, "any", values))
        else:
            conditions.append(Condition(field, "eq", _scalar(field, spec)))
    return conditions


class FilterFactory(ABC):
    """Builds one engine's filter objects; :func:`build_filter` decides which to build."""

    @abstractmethod
    def match(self, field: str, value: str | int | bool) -> Any: ...

    @abstractmethod
    def match_any(self, field: str, values: list[str | int]) -> Any: ...

    @abstractmethod
    def range(self, field: str, bounds: dict[str, float]) -> Any: ...

    @abstractmethod
    def all_of(self, conditions: list[Any]) -> Any: ...

    @abstractmethod
    def any_of(self, conditions: list[Any]) -> Any: ...


def build_filter(conditions: Sequence[Condition], f: FilterFactory) -> Any:
    """The engine filter of parsed ``conditions`` (None for none). Floats match as the exact
    range [v, v] (engines match keywords and integers only); a list holding floats or booleans
    becomes an OR of single conditions (``MatchAny`` takes strings or integers)."""
    if not conditions:
        return None

    def one(field: str, value: Any) -> Any:
        if isinstance(value, float):
            return f.range(field, {"gte": value, "lte": value})
        return f.match(field, value)

    must = []
    for c in conditions:
        if c.kind == "range":
            must.append(f.range(c.field, c.value))
        elif c.kind == "any":
            if any(isinstance(v, float | bool) for v in c.value):
                must.append(f.any_of([one(c.field, v) for v in c.value]))
            else:
                must.append(f.match_any(c.field, c.value))
        else:
            must.append(one(c.field, c.value))
    return f.all_of(must)


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


# ---- interface --------------------------------------------------------------------------------
class Store(ABC):
    """What the pipeline, the API and the workers need from a vector store."""

    backend: str = "abstract"
    location: str = ""  # folder or URL, for messages
    closed: bool = False

    @abstractmethod
    def create_collection(
        self,
        name: str,
        vectors: dict[str, int],
        payload_indexes: dict[str, str] | None = None,
        sparse: Sequence[str] = (),
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Create an empty collection with cosine named vectors and ``sparse`` sparse vectors
        (Qdrant's IDF modifier: the engine scores them as BM25) and metadata ``meta`` (in the
        same step: a build is never visible without its record); ``ValueError`` if it exists."""

    @abstractmethod
    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        """Insert or overwrite points by id (idempotent)."""

    @abstractmethod
    def count(self, collection: str) -> int: ...

    # ---- search: one implementation over small per-engine factories -----------------------
    # A backend supplies the filter factory (:class:`FilterFactory`), three query-request
    # factories and ``_run`` (a batch of requests -> hits); validation, filters, empty sparse
    # queries and the hybrid fallback live here once.
    filters: FilterFactory

    @abstractmethod
    def _dense_request(self, vector: list[float], using: str, limit: int, filter: Any) -> Any:
        """A nearest-neighbour request on the dense vector ``using``."""

    @abstractmethod
    def _sparse_request(self, query: SparseVector, using: str, limit: int, filter: Any) -> Any:
        """A nearest-neighbour request on the sparse vector ``using`` (BM25 with IDF)."""

    @abstractmethod
    def _hybrid_request(
        self,
        dense: list[float],
        sparse: SparseVector,
        *,
        using: str,
        sparse_using: str,
        limit: int,
        filter: Any,
        fusion: Fusion,
    ) -> Any:
        """One query: a dense and a sparse prefetch (both filtered), fused by the engine."""

    @abstractmethod
    def _run(self, collection_or_alias: str, requests: Sequence[Any]) -> list[list[Hit]]:
        """Run query requests in one batch call, one hit list per request."""

    def _run_some(self, collection_or_alias: str, requests: Sequence[Any]) -> list[list[Hit]]:
        """:meth:`_run` where a request may be None (an empty query: no hits)."""
        live = [r for r in requests if r is not None]
        found = iter(self._run(collection_or_alias, live) if live else [])
        return [[] if r is None else next(found) for r in requests]

    def _filter(self, filter: Mapping[str, Any] | None) -> Any:
        return build_filter(parse_filter(filter), self.filters)

    def search(
        self,
        collection_or_alias: str,
        vector: np.ndarray,
        *,
        using: str = DEFAULT_VECTOR,
        top_k: int = 10,
        filter: dict[str, Any] | None = None,
        offset: int = 0,
        group_by: str | None = None,
        group_size: int = PASSAGES,
    ) -> list[Hit]:
        arr = np.asarray(vector)[None, :]
        return self.search_batch(
            collection_or_alias, arr, using=using, top_k=top_k, filter=filter, offset=offset,
            group_by=group_by, group_size=group_size,
        )[0]  # fmt: skip

    def search_batch(
        self,
        collection_or_alias: str,
        vectors: np.ndarray,
        *,
        using: str = DEFAULT_VECTOR,
        top_k: int = 10,
        filter: dict[str, Any] | None = None,
        offset: int = 0,
        group_by: str | None = None,
        group_size: int = PASSAGES,
    ) -> list[list[Hit]]:
        """One result list per row of ``vectors``, in one batch call: hits ``offset`` to
        ``offset + top_k`` ranked by ``(-score, id)``; chunk hits, or one hit per distinct
        ``payload[group_by]`` (see :mod:`indexer.groups`)."""
        arr = check_search_args(top_k, vectors)
        qfilter = self._filter(filter)
        dense = [as_vector(v, using) for v in arr]

        def requests(limit: int) -> list[Any]:
            return [self._dense_request(v, using, limit, qfilter) for v in dense]

        return self._ranked(
            collection_or_alias, requests, top_k=top_k, offset=offset, group_by=group_by,
            group_size=group_size,
        )  # fmt: skip

    def search_sparse_batch(
        self,
        collection_or_alias: str,
        queries: Sequence[SparseVector],
        *,
        using: str = SPARSE_VECTOR,
        top_k: int = 10,
        filter: dict[str, Any] | None = None,
        offset: int = 0,
        group_by: str | None = None,
        group_size: int = PASSAGES,
    ) -> list[list[Hit]]:
        """One result list per sparse query, scored by the engine (BM25 with the IDF modifier);
        an empty query vector (only stopwords) finds nothing. Paging and grouping as
        :meth:`search_batch`."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        qfilter = self._filter(filter)

        def requests(limit: int) -> list[Any]:
            return [self._sparse_request(q, using, limit, qfilter) if q else None for q in queries]

        return self._ranked(
            collection_or_alias, requests, top_k=top_k, offset=offset, group_by=group_by,
            group_size=group_size,
        )  # fmt: skip

    def search_hybrid_batch(
        self,
        collection_or_alias: str,
        vectors: np.ndarray,
        queries: Sequence[SparseVector],
        *,
        using: str = DEFAULT_VECTOR,
        sparse_using: str = SPARSE_VECTOR,
        top_k: int = 10,
        filter: dict[str, Any] | None = None,
        fusion: Fusion | None = None,
        offset: int = 0,
        group_by: str | None = None,
        group_size: int = PASSAGES,
    ) -> list[list[Hit]]:
        """One Query API call per query: a dense and a sparse prefetch (both filtered), fused
        by the engine (RRF, DBSF or the weighted formula of :class:`~indexer.sparse.Fusion`).
        A query whose sparse vector is empty is answered by the dense prefetch alone. Paging and
        grouping as :meth:`search_batch` (the prefetches grow with the page)."""
        arr = check_search_args(top_k, vectors)
        if len(arr) != len(queries):
            raise ValueError(f"{len(arr)} dense vectors but {len(queries)} sparse queries")
        fusion = fusion or Fusion()
        qfilter = self._filter(filter)
        dense_vectors = [as_vector(v, using) for v in arr]
        # the fused ranking is that of the top `candidates` fused chunks, however deep paging or
        # grouping fetches: wider prefetches would move the scores (RRF ranks, DBSF
        # normalisation), so a document's score would not be its best chunk's, nor page 2's
        # ranking page 1's. Pages are stable while offset + top_k <= fusion.prefetch.
        candidates = max(fusion.prefetch, offset + top_k)

        def requests(limit: int) -> list[Any]:
            out = []
            for dense, q in zip(dense_vectors, queries, strict=True):
                if not q:  # nothing for BM25 to match: the dense list alone
                    out.append(self._dense_request(dense, using, limit, qfilter))
                    continue
                out.append(
                    self._hybrid_request(
                        dense,
                        q,
                        using=using,
                        sparse_using=sparse_using,
                        limit=min(limit, candidates),
                        filter=qfilter,
                        fusion=fusion,
                    )
                )
            return out

        return self._ranked(
            collection_or_alias, requests, top_k=top_k, offset=offset, group_by=group_by,
            group_size=group_size,
        )  # fmt: skip

    def _run_groups(
        self, collection_or_alias: str, requests: Sequence[Any], *, group_by: str, groups: int,
        group_size: int,
    ) -> list[list[Hit]] | None:  # fmt: skip
        """The engine's own grouping: per request, its best ``groups`` groups by
        ``payload[group_by]`` as hits (the best chunk, with up to ``group_size`` chunks as
        :attr:`Hit.passages`). None where the engine has none for these requests: they are then
        grouped here, from over-fetched chunk hits (qdrant-edge 0.9 has no group-by)."""
        return None

    def _ranked(
        self,
        collection_or_alias: str,
        requests: Callable[[int], Sequence[Any]],
        *,
        top_k: int,
        offset: int = 0,
        group_by: str | None = None,
        group_size: int = PASSAGES,
    ) -> list[list[Hit]]:
        """Run ``requests(limit)`` (one request per query, None for an empty query) until each
        query's page ``[offset, offset + top_k)`` is settled (:mod:`indexer.groups`): chunk
        hits, or one hit per ``payload[group_by]``, grouped by the engine where it can
        (:meth:`_run_groups`), else from chunk hits fetched ``GROWTH`` times deeper each round."""
        check_page(top_k, offset, group_size)
        limit = first_fetch(top_k, offset, group_by)
        groups = offset + top_k + 1
        pages: dict[int, list[Hit]] = {}
        pending: list[int] | None = None  # None: every query
        while pending is None or pending:
            built = requests(limit)
            todo = list(range(len(built))) if pending is None else pending
            batch = [built[i] for i in todo]
            live = [r for r in batch if r is not None]
            engine = None
            if group_by is not None and live:
                engine = self._run_groups(
                    collection_or_alias, live, group_by=group_by, groups=groups,
                    group_size=group_size,
                )  # fmt: skip
            found = iter(engine if engine is not None else self._run(collection_or_alias, live))
            unsettled = []
            for i, request in zip(todo, batch, strict=True):
                hits = [] if request is None else next(found)
                if engine is not None:
                    page = page_of_groups(hits, fetched=groups, offset=offset, top_k=top_k)
                else:
                    page = page_of_chunks(
                        hits, fetched=limit, offset=offset, top_k=top_k, group_by=group_by,
                        group_size=group_size,
                    )  # fmt: skip
                if page is None:
                    unsettled.append(i)
                else:
                    pages[i] = page
            pending = unsettled
            limit *= GROWTH
            groups = (groups - 1) * GROWTH + 1
        return [pages[i] for i in range(len(pages))]

    @abstractmethod
    def collection_meta(self, collection_or_alias: str) -> dict[str, Any]:
        """The metadata stored with a collection (the fitted fusion, ...); {} if none."""

    @abstractmethod
    def update_collection_meta(self, collection_or_alias: str, meta: Mapping[str, Any]) -> None:
        """Merge ``meta`` (JSON values) into the collection's metadata."""

    def retrieve_vectors(
        self, collection_or_alias: str, ids: Sequence[str], names: Sequence[str]
    ) -> dict[str, dict[str, np.ndarray]]:
        """The stored vectors ``names`` of the points ``ids`` (unknown ids are left out), for
        re-scoring candidates exactly (MoEE ``sum`` fusion in :mod:`indexer.fusion`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot retrieve stored vectors")

    @abstractmethod
    def get_alias(self, alias: str) -> str | None:
        """The collection ``alias`` points at, or None."""

    @abstractmethod
    def switch_alias(self, alias: str, collection: str) -> None:
        """Point ``alias`` at ``collection`` in one atomic step (create it if missing)."""

    @abstractmethod
    def delete_alias(self, alias: str) -> None: ...

    @abstractmethod
    def list_collections(self) -> list[CollectionInfo]: ...

    @abstractmethod
    def delete_collection(self, name: str) -> None:
        """Delete a collection and every alias pointing at it (no error if missing)."""

    def optimize(self, collection: str) -> None:  # noqa: B027 - optional hook
        """Build indexes / flush after bulk writes (no-op where the engine does it itself)."""

    @abstractmethod
    def close(self) -> None: ...

    # ---- helpers shared by implementations ------------------------------------------------
    def resolve(self, collection_or_alias: str) -> str:
        """The collection a name refers to (an alias is followed); raises if neither exists."""
        target = self.get_alias(collection_or_alias)
        if target is not None:
            return target
        if self.has_collection(collection_or_alias):
            return collection_or_alias
        raise CollectionNotFoundError(collection_or_alias)

    def has_collection(self, name: str) -> bool:
        """Whether ``name`` is a collection or an alias, without listing and counting every
        collection (what :meth:`resolve` asks on each search); engines answer it directly."""
        return self.get_alias(name) is not None or any(
            c.name == name for c in self.list_collections()
        )

    def check_complete(self, collection: str) -> str:
        """``collection`` (not an alias) if its build finished; else raises
        :class:`BuildIncompleteError`."""
        if not build_complete(self.collection_meta(collection)):
            raise BuildIncompleteError(collection)
        return collection

    def sparse_names(self, collection: str) -> tuple[str, ...]:
        """The sparse vectors a collection (not an alias) declares; cheaper than
        :meth:`collection_info`, which counts the points of every collection (per search)."""
        return self.collection_info(collection).sparse

    def collection_info(self, collection_or_alias: str) -> CollectionInfo:
        name = self.resolve(collection_or_alias)
        for info in self.list_collections():
            if info.name == name:
                return info
        raise CollectionNotFoundError(collection_or_alias)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- qdrant-client (local mode and server) ----------------------------------------------------
class _ClientFilters(FilterFactory):
    def __init__(self) -> None:
        from qdrant_client import models

        self.m = models

    def match(self, field: str, value: str | int | bool) -> Any:
        return self.m.FieldCondition(key=field, match=self.m.MatchValue(value=value))

    def match_any(self, field: str, values: list[str | int]) -> Any:
        return self.m.FieldCondition(key=field, match=self.m.MatchAny(any=values))  # type: ignore[arg-type]

    def range(self, field: str, bounds: dict[str, float]) -> Any:
        return self.m.FieldCondition(key=field, range=self.m.Range(**bounds))

    def all_of(self, conditions: list[Any]) -> Any:
        return self.m.Filter(must=conditions)

    def any_of(self, conditions: list[Any]) -> Any:
        return self.m.Filter(should=conditions)


class QdrantClientStore(Store):
    """``qdrant-client`` in embedded local mode (``path``) or against a server (``url``).

    Local mode keeps aliases natively in its ``meta.json`` (replaced atomically with
    ``os.replace``), so an alias switch is one atomic file replace. It searches exactly (brute
    force in numpy) and ignores payload indexes, so they are only created on a server.
    """

    def __init__(
        self,
        *,
        path: str | Path | None = None,
        url: str | None = None,
        api_key: str | None = None,
        timeout: int = 60,
    ) -> None:
        from qdrant_client import QdrantClient

        if (path is None) == (url is None):
            raise ValueError("give exactly one of path (embedded) or url (server)")
        self._lock = threading.RLock()
        self.filters = _ClientFilters()
        if path is not None:
            self.backend = "local"
            self.location = str(path)
            if str(path) != ":memory:":  # ":memory:": nothing persisted (tests, benchmarks)
                Path(path).mkdir(parents=True, exist_ok=True)
            try:
                # the API serves requests from a thread pool: sqlite must accept other threads;
                # self._lock serialises every call instead
                self.client = QdrantClient(path=str(path), force_disable_check_same_thread=True)
            except RuntimeError as exc:
                raise StoreError(
                    f"embedded store {path} is locked by another process; embedded mode is one "
                    "process per folder (run the API and workers together, or use a Qdrant "
                    "server: EMBER_QDRANT_URL)"
                ) from exc
        else:
            assert url is not None
            self.backend = "server"
            self.location = url
            # no version probe at construction: the API must start even while the server is still
            # coming up; the first request reports an unreachable server
            self.client = QdrantClient(
                url=url, api_key=api_key, timeout=timeout, check_compatibility=False
            )

    # -- helpers
    def _models(self) -> Any:
        from qdrant_client import models

        return models

    def _exists(self, name: str) -> bool:
        """True for a real collection (``collection_exists`` also answers True for an alias)."""
        return name in {c.name for c in self.client.get_collections().collections}

    def _aliases(self) -> dict[str, str]:
        return {a.alias_name: a.collection_name for a in self.client.get_aliases().aliases}

    # -- interface
    def create_collection(
        self,
        name: str,
        vectors: dict[str, int],
        payload_indexes: dict[str, str] | None = None,
        sparse: Sequence[str] = (),
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        check_name(name)
        vectors = check_vectors(vectors)
        sparse = check_sparse(sparse, vectors)
        indexes = check_payload_indexes(payload_indexes)
        m = self._models()
        with self._lock:
            if self._exists(name) or name in self._aliases():
                raise CollectionExistsError(name)
            self.client.create_collection(
                name,
                vectors_config={
                    v: m.VectorParams(size=d, distance=m.Distance.COSINE)
                    for v, d in vectors.items()
                },
                sparse_vectors_config={
                    n: m.SparseVectorParams(modifier=m.Modifier.IDF) for n in sparse
                }
                or None,
                metadata=dict(meta) if meta else None,
            )
            if self.backend == "server":
                for field, kind in indexes.items():
                    self.client.create_payload_index(
                        name, field, field_schema=m.PayloadSchemaType(kind), wait=True
                    )

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        if not points:
            return
        m = self._models()
        structs = [
            m.PointStruct(
                id=p.id,
                vector={
                    **{name: as_vector(v, name) for name, v in p.vectors.items()},
                    **{
                        name: m.SparseVector(indices=list(v.indices), values=list(v.values))
                        for name, v in p.sparse.items()
                        if v
                    },
                },
                payload=p.payload,
            )
            for p in points
        ]
        with self._lock:
            if not self._exists(collection):
                raise CollectionNotFoundError(collection)
            self.client.upsert(collection, points=structs, wait=True)

    def count(self, collection: str) -> int:
        with self._lock:
            if not self._exists(collection) and collection not in self._aliases():
                raise CollectionNotFoundError(collection)
            return int(self.client.count(collection, exact=True).count)

    def _dense_request(self, vector: list[float], using: str, limit: int, filter: Any) -> Any:
        m = self._models()
        return m.QueryRequest(
            query=vector, using=using, limit=limit, filter=filter, with_payload=True
        )

    def _sparse_request(self, query: SparseVector, using: str, limit: int, filter: Any) -> Any:
        m = self._models()
        return m.QueryRequest(
            query=self._sparse(query), using=using, limit=limit, filter=filter, with_payload=True
        )

    def _hybrid_request(
        self,
        dense: list[float],
        sparse: SparseVector,
        *,
        using: str,
        sparse_using: str,
        limit: int,
        filter: Any,
        fusion: Fusion,
    ) -> Any:
        m = self._models()
        candidates = max(fusion.prefetch, limit)
        return m.QueryRequest(
            prefetch=[
                m.Prefetch(query=dense, using=using, limit=candidates, filter=filter),
                m.Prefetch(
                    query=self._sparse(sparse), using=sparse_using, limit=candidates, filter=filter
                ),
            ],
            query=self._fusion_query(fusion),
            limit=limit,
            with_payload=True,
        )

    def _run(self, collection_or_alias: str, requests: Sequence[Any]) -> list[list[Hit]]:
        with self._lock:
            if not self._exists(collection_or_alias) and (
                collection_or_alias not in self._aliases()
            ):
                raise CollectionNotFoundError(collection_or_alias)
            responses = self.client.query_batch_points(collection_or_alias, requests=requests)
        return [
            [
                Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {}))
                for p in r.points
            ]
            for r in responses
        ]

    def _run_groups(
        self, collection_or_alias: str, requests: Sequence[Any], *, group_by: str, groups: int,
        group_size: int,
    ) -> list[list[Hit]] | None:  # fmt: skip
        """Qdrant's ``query_points_groups`` (one call per query: there is no batch of groups)
        for dense and sparse requests. Hybrid requests (prefetches) are grouped client side
        instead: local mode's ``query_groups`` widens every prefetch to the whole collection,
        which changes RRF ranks and DBSF normalisation, so a document's score would not be its
        best chunk's score in the chunk ranking; one client-side path keeps local and server
        alike."""
        if any(r.prefetch for r in requests):
            return None
        out: list[list[Hit]] = []
        with self._lock:
            if not self._exists(collection_or_alias) and (
                collection_or_alias not in self._aliases()
            ):
                raise CollectionNotFoundError(collection_or_alias)
            for r in requests:
                result = self.client.query_points_groups(
                    collection_or_alias, group_by=group_by, query=r.query, using=r.using,
                    query_filter=r.filter, limit=groups, group_size=group_size,
                    with_payload=True,
                )  # fmt: skip
                hits = []
                for g in result.groups:
                    members = sorted(
                        (
                            Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {}))
                            for p in g.hits
                        ),
                        key=rank_key,
                    )
                    if members:
                        hits.append(replace(members[0], passages=tuple(members)))
                out.append(hits)
        return out

    def _sparse(self, vec: SparseVector) -> Any:
        return self._models().SparseVector(indices=list(vec.indices), values=list(vec.values))

    def _fusion_query(self, fusion: Fusion) -> Any:
        m = self._models()
        if fusion.method == "rrf":
            return m.RrfQuery(rrf=m.Rrf(k=fusion.k))
        if fusion.method == "dbsf":
            return m.FusionQuery(fusion=m.Fusion.DBSF)
        w, c = fusion.weight, fusion.scale
        squashed = m.DivExpression(
            div=m.DivParams(left="$score[1]", right=m.SumExpression(sum=["$score[1]", c]))
        )
        return m.FormulaQuery(
            formula=m.SumExpression(
                sum=[
                    m.MultExpression(mult=[w, "$score[0]"]),
                    m.MultExpression(mult=[1.0 - w, squashed]),
                ]
            ),
            defaults={"$score[0]": 0.0, "$score[1]": 0.0},
        )

    def sparse_names(self, collection: str) -> tuple[str, ...]:
        with self._lock:
            if not self._exists(collection):
                raise CollectionNotFoundError(collection)
            sparse = self.client.get_collection(collection).config.params.sparse_vectors
            return tuple(sorted(sparse or {}))

    def collection_meta(self, collection_or_alias: str) -> dict[str, Any]:
        with self._lock:
            name = self.resolve(collection_or_alias)
            meta = self.client.get_collection(name).config.metadata
            return dict(meta or {})

    def update_collection_meta(self, collection_or_alias: str, meta: Mapping[str, Any]) -> None:
        with self._lock:
            name = self.resolve(collection_or_alias)
            self.client.update_collection(name, metadata=dict(meta))

    def retrieve_vectors(
        self, collection_or_alias: str, ids: Sequence[str], names: Sequence[str]
    ) -> dict[str, dict[str, np.ndarray]]:
        if not ids:
            return {}
        with self._lock:
            if not self._exists(collection_or_alias) and (
                collection_or_alias not in self._aliases()
            ):
                raise CollectionNotFoundError(collection_or_alias)
            records = self.client.retrieve(
                collection_or_alias, ids=list(ids), with_vectors=list(names), with_payload=False
            )
        out: dict[str, dict[str, np.ndarray]] = {}
        for r in records:
            stored: Any = r.vector  # a dict of the requested named vectors
            out[str(r.id)] = {n: np.asarray(stored[n], dtype=np.float32) for n in names}
        return out

    def get_alias(self, alias: str) -> str | None:
        with self._lock:
            return self._aliases().get(alias)

    def switch_alias(self, alias: str, collection: str) -> None:
        check_name(alias, "alias")
        m = self._models()
        with self._lock:
            if not self._exists(collection):
                raise CollectionNotFoundError(collection)
            if self._exists(alias):
                raise ValueError(f"alias {alias!r} would shadow a collection of that name")
            ops: list[Any] = []
            if alias in self._aliases():
                ops.append(m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=alias)))
            ops.append(
                m.CreateAliasOperation(
                    create_alias=m.CreateAlias(collection_name=collection, alias_name=alias)
                )
            )
            # one request: the server applies the list atomically; local mode saves once
            self.client.update_collection_aliases(change_aliases_operations=ops)

    def delete_alias(self, alias: str) -> None:
        m = self._models()
        with self._lock:
            if alias in self._aliases():
                self.client.update_collection_aliases(
                    change_aliases_operations=[
                        m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=alias))
                    ]
                )

    def has_collection(self, name: str) -> bool:
        with self._lock:
            return bool(self.client.collection_exists(name))

    def list_collections(self) -> list[CollectionInfo]:
        with self._lock:
            aliases = self._aliases()
            out = []
            for c in sorted(self.client.get_collections().collections, key=lambda c: c.name):
                info = self.client.get_collection(c.name)
                params = info.config.params.vectors
                if isinstance(params, Mapping):
                    vectors = {k: int(v.size) for k, v in params.items()}
                elif params is not None:
                    vectors = {"": int(params.size)}
                else:
                    vectors = {}
                sparse = info.config.params.sparse_vectors or {}
                out.append(
                    CollectionInfo(
                        name=c.name,
                        aliases=sorted(a for a, t in aliases.items() if t == c.name),
                        points=int(self.client.count(c.name, exact=True).count),
                        vectors=vectors,
                        sparse=tuple(sorted(sparse)),
                        complete=build_complete(info.config.metadata),
                    )
                )
            return out

    def delete_collection(self, name: str) -> None:
        with self._lock:
            for alias, target in self._aliases().items():
                if target == name:
                    self.delete_alias(alias)
            self.client.delete_collection(name)

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                self.client.close()

"""The abstract :class:`Store`: what the pipeline, the API and the workers need from a vector
store, with search, paging and grouping implemented once over small per-engine factories."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

import numpy as np

from indexer.groups import Page, settle_each
from indexer.sparse import SPARSE_VECTOR, Fusion, SparseVector
from indexer.store.filters import FilterFactory, build_filter, parse_filter
from indexer.store.model import (
    DEFAULT_VECTOR,
    BuildIncompleteError,
    CollectionInfo,
    CollectionNotFoundError,
    CollectionSpec,
    Hit,
    Point,
    as_vector,
    build_complete,
    check_name,
    check_payload_indexes,
    check_search_args,
    check_sparse,
    check_vectors,
)


@dataclass(frozen=True)
class HybridQuery:
    """One hybrid query: the dense vector ``using`` and the sparse ``sparse_using``, fused."""

    dense: list[float]
    sparse: SparseVector
    using: str
    sparse_using: str
    fusion: Fusion


class PageOptions(TypedDict, total=False):
    """What every search takes besides its queries: ``top_k`` (10) hits from ``offset`` (0),
    ``filter`` (None: all), chunk hits or, with ``group_by``, one hit per distinct
    ``payload[group_by]`` carrying up to ``group_size`` (:data:`~indexer.groups.PASSAGES`)
    chunks (see :mod:`indexer.groups`)."""

    top_k: int
    filter: dict[str, Any] | None
    offset: int
    group_by: str | None
    group_size: int


class SearchOptions(PageOptions, total=False):
    """The keyword options of :meth:`Store.search_batch`."""

    using: str


class Store(ABC):
    """What the pipeline, the API and the workers need from a vector store."""

    backend: str = "abstract"
    location: str = ""  # folder or URL, for messages
    closed: bool = False

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
        check_name(name)
        vectors = check_vectors(vectors)
        spec = CollectionSpec(
            vectors=vectors,
            sparse=check_sparse(sparse, vectors),
            payload_indexes=check_payload_indexes(payload_indexes),
            meta=meta,
        )
        self._create_collection(name, spec)

    @abstractmethod
    def _create_collection(self, name: str, spec: CollectionSpec) -> None:
        """Create the checked collection; :class:`CollectionExistsError` if ``name`` is taken
        (by a collection or an alias)."""

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        """Insert or overwrite points by id (idempotent)."""
        if not points:
            return
        self._upsert(collection, [self._point(p, self._point_vectors(p)) for p in points])

    def _point_vectors(self, point: Point) -> dict[str, Any]:
        """A point's checked dense vectors and its non-empty sparse vectors, by name."""
        dense = {name: as_vector(v, name) for name, v in point.vectors.items()}
        sparse = {name: self._sparse_vector(v) for name, v in point.sparse.items() if v}
        return {**dense, **sparse}

    @abstractmethod
    def _sparse_vector(self, vector: SparseVector) -> Any:
        """The engine's sparse vector."""

    @abstractmethod
    def _point(self, point: Point, vectors: dict[str, Any]) -> Any:
        """The engine's point of ``point`` with its ``vectors`` (:meth:`_point_vectors`)."""

    @abstractmethod
    def _upsert(self, collection: str, points: list[Any]) -> None:
        """Write engine points (:meth:`_point`) into ``collection`` (not an alias)."""

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
    def _hybrid_request(self, query: HybridQuery, limit: int, filter: Any) -> Any:
        """One query: a dense and a sparse prefetch (both filtered), fused by the engine."""

    @abstractmethod
    def _run(self, collection_or_alias: str, requests: Sequence[Any]) -> list[list[Hit]]:
        """Run query requests in one batch call, one hit list per request."""

    def _filter(self, filter: Mapping[str, Any] | None) -> Any:
        return build_filter(parse_filter(filter), self.filters)

    def search(
        self, collection_or_alias: str, vector: np.ndarray, **options: Unpack[SearchOptions]
    ) -> list[Hit]:
        """:meth:`search_batch` for one query vector."""
        return self.search_batch(collection_or_alias, np.asarray(vector)[None, :], **options)[0]

    def search_batch(
        self,
        collection_or_alias: str,
        vectors: np.ndarray,
        *,
        using: str = DEFAULT_VECTOR,
        **options: Unpack[PageOptions],
    ) -> list[list[Hit]]:
        """One result list per row of ``vectors``, in one batch call: hits ``offset`` to
        ``offset + top_k`` ranked by ``(-score, id)`` (:class:`PageOptions`)."""
        page = Page.of(options)
        dense = [as_vector(v, using) for v in check_search_args(page.top_k, vectors)]

        def requests(limit: int, qfilter: Any) -> list[Any]:
            return [self._dense_request(v, using, limit, qfilter) for v in dense]

        return self._paged(collection_or_alias, len(dense), requests, page, options)

    def search_sparse_batch(
        self,
        collection_or_alias: str,
        queries: Sequence[SparseVector],
        *,
        using: str = SPARSE_VECTOR,
        **options: Unpack[PageOptions],
    ) -> list[list[Hit]]:
        """One result list per sparse query, scored by the engine (BM25 with the IDF modifier);
        an empty query vector (only stopwords) finds nothing. Paging and grouping as
        :meth:`search_batch`."""
        page = Page.of(options)

        def requests(limit: int, qfilter: Any) -> list[Any]:
            return [self._sparse_request(q, using, limit, qfilter) if q else None for q in queries]

        return self._paged(collection_or_alias, len(queries), requests, page, options)

    def search_hybrid_batch(
        self,
        collection_or_alias: str,
        vectors: np.ndarray,
        queries: Sequence[SparseVector],
        *,
        using: str = DEFAULT_VECTOR,
        sparse_using: str = SPARSE_VECTOR,
        fusion: Fusion | None = None,
        **options: Unpack[PageOptions],
    ) -> list[list[Hit]]:
        """One Query API call per query: a dense and a sparse prefetch (both filtered), fused
        by the engine (RRF, DBSF or the weighted formula of :class:`~indexer.sparse.Fusion`).
        A query whose sparse vector is empty is answered by the dense prefetch alone. Paging and
        grouping as :meth:`search_batch` (the prefetches grow with the page)."""
        page = Page.of(options)
        arr = check_search_args(page.top_k, vectors)
        if len(arr) != len(queries):
            raise ValueError(f"{len(arr)} dense vectors but {len(queries)} sparse queries")
        fused = fusion or Fusion()
        dense_vectors = [as_vector(v, using) for v in arr]
        # the fused ranking is that of the top `candidates` fused chunks, however deep paging or
        # grouping fetches: wider prefetches would move the scores (RRF ranks, DBSF
        # normalisation), so a document's score would not be its best chunk's, nor page 2's
        # ranking page 1's. Pages are stable while offset + top_k <= fusion.prefetch.
        candidates = max(fused.prefetch, page.offset + page.top_k)

        def requests(limit: int, qfilter: Any) -> list[Any]:
            out = []
            for dense, q in zip(dense_vectors, queries, strict=True):
                if not q:  # nothing for BM25 to match: the dense list alone
                    out.append(self._dense_request(dense, using, limit, qfilter))
                    continue
                hybrid = HybridQuery(dense, q, using, sparse_using, fused)
                out.append(self._hybrid_request(hybrid, min(limit, candidates), qfilter))
            return out

        return self._paged(collection_or_alias, len(dense_vectors), requests, page, options)

    def _paged(
        self, collection_or_alias: str, queries: int,
        requests: Callable[[int, Any], Sequence[Any]], page: Page, options: PageOptions,
    ) -> list[list[Hit]]:  # fmt: skip
        """:meth:`_ranked` for ``requests(limit, engine_filter)`` on ``page``, with ``options``'
        filter built for this engine."""
        qfilter = self._filter(options.get("filter"))
        return self._ranked(
            collection_or_alias, queries, lambda limit: requests(limit, qfilter), page
        )

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
        self, collection_or_alias: str, queries: int, requests: Callable[[int], Sequence[Any]],
        page: Page,
    ) -> list[list[Hit]]:  # fmt: skip
        """Run ``requests(limit)`` (one request per query, None for an empty query) until each
        query's ``page`` is settled (:mod:`indexer.groups`): chunk hits, or one hit per
        ``payload[group_by]``, grouped by the engine where it can (:meth:`_run_groups`), else
        from chunk hits fetched ``GROWTH`` times deeper each round."""

        def attempt(pending: list[int], scale: int) -> list[list[Hit] | None]:
            limit, groups = page.first_fetch * scale, (page.offset + page.top_k) * scale + 1
            built = requests(limit)
            batch = [built[i] for i in pending]
            live = [r for r in batch if r is not None]
            engine = None
            if page.group_by is not None and live:
                engine = self._run_groups(
                    collection_or_alias, live, group_by=page.group_by, groups=groups,
                    group_size=page.group_size,
                )  # fmt: skip
            found = iter(engine if engine is not None else self._run(collection_or_alias, live))
            hits = [[] if request is None else next(found) for request in batch]
            if engine is not None:
                return [page.of_groups(h, groups) for h in hits]
            return [page.of_chunks(h, limit) for h in hits]

        return settle_each(queries, attempt)

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

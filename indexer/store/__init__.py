"""Vector store: one small interface over Qdrant, three ways to run it.

* :class:`QdrantClientStore` over ``qdrant-client`` (:mod:`indexer.store.client`): embedded *local
  mode* (a folder on disk, exact search in Python) or a *server* URL (production: HNSW, payload
  indexes, many processes).
* :class:`EdgeStore` over ``qdrant-edge-py`` (:mod:`indexer.store.edge`): the real Qdrant engine
  in-process (HNSW, payload indexes, WAL), one shard folder per collection.

Both implement the abstract :class:`Store` (:mod:`indexer.store.base`), where search, paging and
grouping are written once; the data model (hits, points, errors, name checks) is in
:mod:`indexer.store.model`, the filter model in :mod:`indexer.store.filters`, and the factory that
opens the configured backend in :mod:`indexer.stores`.

Every collection uses cosine distance and *named* vectors (``"dense"`` by default, several when an
encoder produces several, e.g. MoEE ``hs`` + ``rw``). Point ids are UUID strings. Collections are
versioned (``<name>__<fingerprint>__v<N>``, see :mod:`indexer.pipeline`) and served through an
alias that :meth:`Store.switch_alias` moves atomically.

Embedded stores lock their folder to one process (qdrant-client takes a ``portalocker`` lock on
``<folder>/.lock``; the edge store takes an ``fcntl`` lock and qdrant-edge locks each shard). In
embedded mode the API and the workers therefore share the store by running in one process (the
default: jobs run in-process when no broker is configured); with a broker use a Qdrant server.
"""

from indexer.store.base import PageOptions, Store
from indexer.store.client import QdrantClientStore
from indexer.store.edge import EdgeStore
from indexer.store.filters import (
    RANGE_OPERATORS,
    Condition,
    FilterFactory,
    build_filter,
    parse_filter,
)
from indexer.store.model import (
    BUILD_META_KEY,
    DEFAULT_VECTOR,
    PAYLOAD_INDEX_TYPES,
    SOURCE_META_KEY,
    BuildIncompleteError,
    CollectionExistsError,
    CollectionInfo,
    CollectionNotFoundError,
    Hit,
    Point,
    StoreError,
    StoreLockedError,
    build_complete,
    check_name,
    check_payload_indexes,
)

__all__ = [
    "BUILD_META_KEY",
    "DEFAULT_VECTOR",
    "PAYLOAD_INDEX_TYPES",
    "RANGE_OPERATORS",
    "SOURCE_META_KEY",
    "BuildIncompleteError",
    "CollectionExistsError",
    "CollectionInfo",
    "CollectionNotFoundError",
    "Condition",
    "EdgeStore",
    "FilterFactory",
    "Hit",
    "PageOptions",
    "Point",
    "QdrantClientStore",
    "Store",
    "StoreError",
    "StoreLockedError",
    "build_complete",
    "build_filter",
    "check_name",
    "check_payload_indexes",
    "parse_filter",
]

"""Opening the configured store: a Qdrant server, or an embedded backend under the data folder.

Kept apart from :mod:`indexer.store` (the contract and the qdrant-client backend) and
:mod:`indexer.edge_store` (the qdrant-edge backend), which both import the contract: this module
is the only one that knows every backend.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from indexer.edge_store import EdgeStore
from indexer.store import QdrantClientStore, Store

if TYPE_CHECKING:
    from indexer.settings import Settings


def open_store(settings: Settings | None = None) -> Store:
    """The configured store: a Qdrant server when ``qdrant_url`` is set, else the embedded
    backend (``embedded_backend``: ``local`` = qdrant-client local mode under
    ``data_dir/qdrant``, ``edge`` = qdrant-edge under ``data_dir/edge``)."""
    if settings is None:
        from indexer.settings import get_settings

        settings = get_settings()
    if settings.qdrant_url:
        return QdrantClientStore(url=settings.qdrant_url, api_key=settings.qdrant_api_key)
    backend = settings.embedded_backend
    if backend == "local":
        return QdrantClientStore(path=Path(settings.data_dir) / "qdrant")
    if backend == "edge":
        return EdgeStore(Path(settings.data_dir) / "edge", hnsw_ef=settings.edge_hnsw_ef)
    raise ValueError(f"EMBER_EMBEDDED_BACKEND: unknown backend {backend!r} (use 'local' or 'edge')")


_shared: dict[tuple[str, str], Store] = {}
_shared_lock = threading.Lock()


def shared_store(settings: Settings | None = None) -> Store:
    """One store per process and location (embedded folders lock to one process: the API and
    in-process jobs must share one instance). Closing it is the process owner's job."""
    if settings is None:
        from indexer.settings import get_settings

        settings = get_settings()
    if settings.qdrant_url:
        key = ("server", settings.qdrant_url)
    else:
        key = (settings.embedded_backend, str(Path(settings.data_dir).resolve()))
    with _shared_lock:
        store = _shared.get(key)
        if store is None or store.closed:
            store = _shared[key] = open_store(settings)
        return store

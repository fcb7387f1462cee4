"""Where :class:`~indexer.store.edge.EdgeStore` used to live; ``from indexer.edge_store import
EdgeStore`` keeps working (the backend is now in :mod:`indexer.store.edge`)."""

from indexer.store.edge import DEFAULT_HNSW_EF, EdgeStore

__all__ = ["DEFAULT_HNSW_EF", "EdgeStore"]

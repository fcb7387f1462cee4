"""Store configuration: which backend open_store picks, the shared instance, server mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.settings import Settings
from indexer.store import QdrantClientStore
from indexer.stores import open_store, shared_store


def test_shared_store_is_one_instance_per_location(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, embedded_backend="edge")
    a = shared_store(settings)
    try:
        assert shared_store(settings) is a
    finally:
        a.close()
    b = shared_store(settings)  # a closed one is replaced
    assert b is not a
    b.close()


def test_server_mode_configuration() -> None:
    """No Qdrant server runs here: check the URL/api-key path is taken and fails clearly."""
    store = open_store(
        Settings(
            qdrant_url="http://127.0.0.1:9", qdrant_api_key=None, data_dir=Path("/nonexistent")
        )
    )
    assert isinstance(store, QdrantClientStore) and store.backend == "server"
    assert store.location == "http://127.0.0.1:9"
    with pytest.raises(Exception, match=r"(?i)connect|refused"):
        store.list_collections()
    store.close()


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="EMBER_EMBEDDED_BACKEND"):
        open_store(Settings(embedded_backend="sqlite"))

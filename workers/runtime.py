"""Per-process resources for tasks: settings, the encoder and the store, each created once.

A worker process loads its encoder lazily on the first task that needs it and keeps it (a GPU
worker runs the solo pool, one process per device, so one model per device). The store is opened
once per process too (:func:`indexer.stores.shared_store`): an embedded store locks its folder to
one process.

A process that already holds an encoder and a store (the API running jobs in-process in embedded
mode) hands them over with :func:`provide`, so jobs use the same instances instead of opening the
locked store a second time.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from encoders import Encoder
    from indexer.store import Store
    from workers.settings import WorkerSettings

_lock = threading.RLock()
_settings: WorkerSettings | None = None
_encoders: dict[str, Encoder] = {}
_stores: dict[str, Store] = {}
_owned: set[str] = set()  # stores opened here (closed by reset); provided ones are not ours


def settings() -> WorkerSettings:
    if _settings is not None:
        return _settings
    from workers.settings import get_worker_settings

    return get_worker_settings()


def store_key(s: WorkerSettings) -> str:
    if s.qdrant_url:
        return f"url:{s.qdrant_url}"
    return f"{s.embedded_backend}:{Path(s.data_dir).resolve()}"


def provide(
    settings: WorkerSettings | None = None,
    store: Store | None = None,
    encoder: Encoder | None = None,
) -> None:
    """Make this process's tasks use these settings, store and encoder (embedded API)."""
    global _settings
    with _lock:
        if settings is not None:
            _settings = settings
        current = _settings
        if current is None:
            from workers.settings import get_worker_settings

            current = get_worker_settings()
        if store is not None:
            _stores[store_key(current)] = store
        if encoder is not None:
            _encoders[current.encoder] = encoder


def resolve_device(name: str) -> str:
    """``EMBER_WORKER_DEVICE``: ``auto`` is ``cuda`` when torch sees a GPU (a GPU worker runs
    with ``CUDA_VISIBLE_DEVICES`` set to its one device), else ``cpu``."""
    import torch

    name = name.strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"EMBER_WORKER_DEVICE={name}: torch sees no CUDA device")
        return name
    raise ValueError(f"EMBER_WORKER_DEVICE: unknown device {name!r} (auto, cpu, cuda, cuda:N)")


def get_encoder(spec: str | None = None) -> Encoder:
    """The encoder for ``spec`` (default: the configured one), loaded on first use and placed
    on ``EMBER_WORKER_DEVICE``."""
    current = settings()
    spec = spec or current.encoder
    with _lock:
        encoder = _encoders.get(spec)
        if encoder is None:
            from encoders import load_encoder

            device = resolve_device(current.worker_device)
            encoder = _encoders[spec] = load_encoder(spec, device=device)
        return encoder


def get_store() -> Store:
    s = settings()
    key = store_key(s)
    with _lock:
        store = _stores.get(key)
        if store is None or getattr(store, "closed", False):
            from indexer.stores import shared_store

            store = _stores[key] = shared_store(s)  # the process's one instance per location
            _owned.add(key)
        return store


def reset() -> None:
    """Forget everything, closing the stores this module opened (a worker process owns them);
    for worker shutdown and tests."""
    global _settings
    with _lock:
        for key in _owned:
            with contextlib.suppress(Exception):  # closing is best effort
                _stores[key].close()
        _owned.clear()
        _stores.clear()
        _encoders.clear()
        _settings = None

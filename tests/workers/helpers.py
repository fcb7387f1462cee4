"""Shared helpers for the worker tests: documents, settings, reading a finished store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from indexer.pipeline import point_id
from indexer.store import Store
from workers.settings import WorkerSettings

WORDS = ["protein", "cell", "gene", "vitamin", "infection", "search", "engine", "vector", "model"]


def documents(n: int, prefix: str = "doc") -> list[dict[str, Any]]:
    """``n`` short distinct documents (one chunk each)."""
    return [
        {
            "id": f"{prefix}-{i}",
            "text": f"{prefix} {i}: {WORDS[i % len(WORDS)]} and {WORDS[(i * 7) % len(WORDS)]}",
            "metadata": {"n": i},
        }
        for i in range(n)
    ]


def simcse_params(tmp: Path, encoder: str) -> dict[str, Any]:
    """A real SimCSE run, two steps on 16 sentences (seconds on a tiny model)."""
    data = tmp / "train-texts.jsonl"
    data.write_text("".join(json.dumps({"text": d["text"]}) + "\n" for d in documents(16, "t")))
    return {"from": encoder, "out": str(tmp / "trained"), "data": [str(data)], "max_steps": 2,
            "batch_size": 4, "save_steps": 2}  # fmt: skip


def expected_ids(docs: list[dict[str, Any]]) -> set[str]:
    return {point_id(str(d["id"]), 0) for d in docs}


def client_settings(tmp: Path, broker_url: str | None, **overrides: Any) -> WorkerSettings:
    return WorkerSettings(
        broker_url=broker_url,
        result_backend=None,
        data_dir=tmp / "client-data",
        **overrides,
    )


def store_contents(data_dir: Path, alias: str) -> tuple[str | None, int, set[str], list[str]]:
    """(collection behind ``alias``, its point count, its point ids, every collection name) of
    the embedded store in ``data_dir``; open it only once its owner process has exited."""
    from indexer.stores import open_store

    store = open_store(WorkerSettings(data_dir=data_dir, qdrant_url=None))
    try:
        return contents(store, alias)
    finally:
        store.close()


def contents(store: Store, alias: str) -> tuple[str | None, int, set[str], list[str]]:
    """(collection behind ``alias``, its point count, its point ids, every collection name)."""
    names = sorted(info.name for info in store.list_collections())
    collection = store.get_alias(alias)
    if collection is None:
        return None, 0, set(), names
    count = store.count(collection)
    dim = store.collection_info(collection).vectors["dense"]
    probe = np.ones(dim, dtype=np.float32) / np.sqrt(dim)
    hits = store.search(collection, probe, top_k=count + 10)
    return collection, count, {h.id for h in hits}, names

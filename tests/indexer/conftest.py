"""Fixtures for the indexer tests: a tiny random encoder (fast, deterministic) and stores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from indexer.store import QdrantClientStore, Store


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from encoders.testing import tiny_model_folder

    return tiny_model_folder(tmp_path_factory.mktemp("tiny") / "m", "llama")


@pytest.fixture(scope="session")
def tiny(tiny_folder: Path) -> Any:
    from encoders import load_encoder

    return load_encoder(str(tiny_folder))


BOTH = pytest.mark.parametrize("store", ["local", "edge"], indirect=True)


@pytest.fixture
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An embedded store: edge unless a test asks for both backends with ``@BOTH``."""
    s: Store
    if getattr(request, "param", "edge") == "local":
        s = QdrantClientStore(path=tmp_path / "qdrant")
    else:
        from indexer.edge_store import EdgeStore

        s = EdgeStore(tmp_path / "edge")
    yield s
    s.close()


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


TOPICS = [
    "the quick brown fox jumps over the lazy dog",
    "vitamin D deficiency and the risk of infection in adults",
    "search engines rank documents by cosine similarity of embeddings",
    "large language models turn text into vectors with bidirectional attention",
    "proteins cells and genes in a scientific claim",
]


def corpus_records(n: int = 20) -> list[dict[str, Any]]:
    return [
        {
            "id": f"d{i}",
            "title": f"title {i}",
            "text": " ".join([TOPICS[i % len(TOPICS)]] * (1 + i % 4)),
            "year": 2000 + i,
            "lang": "en" if i % 2 else "de",
        }
        for i in range(n)
    ]

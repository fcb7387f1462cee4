"""Typed runtime settings (env vars ``EMBER_*``, or a ``.env`` file): the indexer's part.

One environment, three layers of settings, each typed next to the code that reads it:
:class:`Settings` here (the encoder, the data folder, the store: what ``ember index`` and the
evaluation harness read), :class:`workers.settings.WorkerSettings` (broker, job and worker
settings) and :class:`search_api.settings.ApiSettings` (the HTTP API's). Each extends the one
below it, so a worker or the API reads the store settings the same way the indexer does, and
the variable names do not change with the layer that reads them.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound="Settings")


class Settings(BaseSettings):
    # extra="ignore": the environment and .env hold every layer's variables
    model_config = SettingsConfigDict(env_prefix="EMBER_", env_file=".env", extra="ignore")

    def __init__(self, **values: Any) -> None:
        # ... but a keyword this kind does not have is a mistake (a worker setting given to the
        # indexer's settings would be dropped silently): refuse it by name.
        unknown = sorted(
            k for k in values if not k.startswith("_") and k not in type(self).model_fields
        )
        if unknown:
            raise TypeError(f"{type(self).__name__} has no setting {', '.join(unknown)}")
        super().__init__(**values)

    encoder: str = Field(
        default="smollm2-ember", description="encoder preset, encoder folder or HF folder"
    )
    data_dir: Path = Field(
        default=Path(".ember"), description="embedded store and job state live here"
    )
    qdrant_url: str | None = Field(default=None, description="Qdrant server URL; unset = embedded")
    qdrant_api_key: str | None = None
    embedded_backend: str = Field(
        default="edge", description="embedded store: 'edge' (qdrant-edge, HNSW) or 'local'"
    )
    edge_hnsw_ef: int = Field(
        default=256, ge=1, description="edge store: HNSW candidates per search (recall/latency)"
    )
    search_mode: Literal["dense", "sparse", "hybrid"] = Field(
        default="hybrid",
        description="search mode when a request names none (collections without BM25 vectors: "
        "dense)",
    )
    max_doc_chars: int = Field(
        default=1_000_000,
        ge=1,
        description="corpus documents longer than this (title + text, in characters) are bad "
        "records (fail or skip, as any other)",
    )


@cache
def _read(kind: type[Settings]) -> Settings:
    return kind()


def read_settings(kind: type[S]) -> S:
    """The environment's settings of one kind, read once per process (tests that change the
    environment call :func:`clear_settings_cache`)."""
    return cast(S, _read(kind))  # _read(kind) built it: the cache is keyed by kind


def clear_settings_cache() -> None:
    """Forget every kind's cached read: the next read sees the environment as it is now."""
    _read.cache_clear()


def get_settings() -> Settings:
    return read_settings(Settings)

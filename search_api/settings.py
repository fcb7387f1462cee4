"""Typed settings of the search API (``EMBER_*``; `ember serve`).

They extend :class:`workers.settings.WorkerSettings`, the API's one door into ``workers`` for
settings (see the import-linter contract in pyproject.toml): the API submits jobs, or runs them
in-process, with the workers' broker and job settings.
"""

from __future__ import annotations

from pydantic import Field

from indexer.settings import read_settings
from workers.settings import WorkerSettings, broker_without_qdrant

__all__ = ["ApiSettings", "broker_without_qdrant", "get_api_settings"]


class ApiSettings(WorkerSettings):
    api_keys: list[str] = Field(default_factory=list, description="Bearer keys; empty = open")
    api_host: str = Field(default="127.0.0.1", description="`ember serve` bind address")
    api_port: int = Field(default=8000, ge=0, le=65535, description="`ember serve` port")
    api_default_collection: str = Field(default="default", description="searched when none given")
    api_max_body_bytes: int = Field(default=1_000_000, ge=1, description="bigger bodies: 413")
    api_max_concurrent: int = Field(default=64, ge=1, description="more in flight: 429")
    api_body_timeout_s: float = Field(
        default=10.0, gt=0, description="s to receive a whole request body; slower: 408"
    )
    api_max_inputs: int = Field(default=256, ge=1, description="max texts per /v1/embeddings call")
    api_micro_batching: bool = Field(default=True, description="batch concurrent encodes together")
    api_batch_wait_ms: float = Field(default=5.0, ge=0, description="micro-batch fill wait")
    api_max_batch: int = Field(default=32, ge=1, description="max texts per micro-batch forward")
    api_max_encoders: int = Field(
        default=2,
        ge=1,
        description="encoders the API keeps loaded (EMBER_ENCODER's counts; least recently used "
        "others are unloaded)",
    )
    api_encoder_wait_s: float = Field(
        default=30.0,
        ge=0,
        description="s a /search waits for its collection's encoder to load; longer: 503",
    )


def get_api_settings() -> ApiSettings:
    return read_settings(ApiSettings)

"""Typed runtime settings shared by the CLI, the API and the workers (env vars ``EMBER_*``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMBER_", env_file=".env", extra="ignore")

    encoder: str = Field("smollm2", description="encoder preset, encoder folder or HF folder")
    data_dir: Path = Field(Path(".ember"), description="embedded store and job state live here")
    qdrant_url: str | None = Field(None, description="Qdrant server URL; unset = embedded")
    qdrant_api_key: str | None = None
    embedded_backend: str = Field("local", description="embedded store: 'local' or 'edge'")
    broker_url: str | None = Field(None, description="Redis URL for Celery; unset = in-process")
    result_backend: str | None = None
    api_keys: list[str] = Field(default_factory=list, description="Bearer keys; empty = open")
    # search API (search_api/, `ember serve`)
    api_host: str = Field("127.0.0.1", description="`ember serve` bind address")
    api_port: int = Field(8000, ge=0, le=65535, description="`ember serve` port")
    api_default_collection: str = Field("default", description="collection when none is given")
    api_max_body_bytes: int = Field(1_000_000, ge=1, description="larger request bodies get 413")
    api_max_concurrent: int = Field(64, ge=1, description="in-flight requests beyond get 429")
    api_max_inputs: int = Field(256, ge=1, description="max texts per /v1/embeddings call")
    api_micro_batching: bool = Field(True, description="batch concurrent encodes together")
    api_batch_wait_ms: float = Field(5.0, ge=0, description="max wait to fill a micro-batch")
    api_max_batch: int = Field(32, ge=1, description="max texts per micro-batch forward")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

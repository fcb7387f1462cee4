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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

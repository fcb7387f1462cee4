"""Typed runtime settings shared by the CLI, the API and the workers (env vars ``EMBER_*``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMBER_", env_file=".env", extra="ignore")

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
    broker_url: str | None = Field(
        default=None, description="Redis URL for Celery; unset = in-process"
    )
    result_backend: str | None = None
    api_keys: list[str] = Field(default_factory=list, description="Bearer keys; empty = open")
    # search API (search_api/, `ember serve`)
    api_host: str = Field(default="127.0.0.1", description="`ember serve` bind address")
    api_port: int = Field(default=8000, ge=0, le=65535, description="`ember serve` port")
    api_default_collection: str = Field(default="default", description="searched when none given")
    search_mode: Literal["dense", "sparse", "hybrid"] = Field(
        default="hybrid",
        description="search mode when a request names none (collections without BM25 vectors: "
        "dense)",
    )
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
    # workers (workers/, `ember worker`, `ember jobs`; see deploy/README.md)
    worker_queues: list[str] = Field(
        default=["index", "train"], description="queues `ember worker` consumes by default"
    )
    job_batch_docs: int = Field(default=64, ge=1, description="documents per index batch task")
    job_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="in-process (API) jobs: added to the job thread's nice value, below search",
    )
    job_torch_threads: int | None = Field(
        default=None,
        ge=1,
        description="in-process (API) jobs: torch intra-op threads of the job thread; unset = "
        "as many as search",
    )
    visibility_timeout: int = Field(
        default=6 * 3600, ge=1, description="s before an unacked task goes to another worker"
    )
    unacked_restore_interval: float = Field(
        default=2.0, gt=0, description="s between a worker's sweeps for expired unacked tasks"
    )
    retrain_schedule: list[dict[str, Any]] = Field(
        default_factory=list, description="JSON list of {name, cron, trainer, params} for beat"
    )
    trainer_modules: list[str] = Field(
        default_factory=list, description="modules whose TRAINERS dict adds training jobs"
    )
    job_input_dir: Path | None = Field(
        default=None,
        description="jobs read paths (corpora, training data, input encoders) only inside this "
        "folder; unset = input paths are refused",
    )
    job_output_dir: Path | None = Field(
        default=None,
        description="training jobs write their output folders only inside this folder; unset = "
        "<data_dir>/jobs-out",
    )
    max_doc_chars: int = Field(
        default=1_000_000,
        ge=1,
        description="corpus documents longer than this (title + text, in characters) are bad "
        "records (fail or skip, as any other)",
    )
    worker_device: str = Field(
        default="auto", description="torch device of worker encoders: auto, cpu, cuda, cuda:N"
    )

    @property
    def job_output_root(self) -> Path:
        """Where training jobs write: ``job_output_dir``, else ``<data_dir>/jobs-out`` (the
        workers confine outputs to it; the API loads retrained encoders from it)."""
        return self.job_output_dir or Path(self.data_dir) / "jobs-out"


def broker_without_qdrant(settings: Settings) -> str | None:
    """The warning for a broker with an embedded store: each worker would write its own
    folder, which the API never reads (deploy/README.md); None when the setup is consistent."""
    if settings.broker_url and not settings.qdrant_url:
        return (
            "EMBER_BROKER_URL is set without EMBER_QDRANT_URL: workers in other processes write "
            "to their own embedded stores, which this process never sees; set EMBER_QDRANT_URL "
            "to a Qdrant server shared by the API and the workers"
        )
    return None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

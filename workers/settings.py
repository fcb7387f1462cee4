"""Typed settings of the workers and of the jobs they run (``EMBER_*``; see deploy/README.md).

They extend the indexer's :class:`indexer.settings.Settings` (encoder, data folder, store): a
worker reads both from one environment. The API extends these in turn
(:class:`search_api.settings.ApiSettings`): it submits jobs, or runs them in-process, with the
same broker and job settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from indexer.settings import Settings, read_settings


class WorkerSettings(Settings):
    # workers (workers/, `ember worker`, `ember jobs`; see deploy/README.md)
    broker_url: str | None = Field(
        default=None, description="Redis URL for Celery; unset = in-process"
    )
    result_backend: str | None = None
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
    worker_device: str = Field(
        default="auto", description="torch device of worker encoders: auto, cpu, cuda, cuda:N"
    )

    @property
    def job_output_root(self) -> Path:
        """Where training jobs write: ``job_output_dir``, else ``<data_dir>/jobs-out`` (the
        workers confine outputs to it; the API loads retrained encoders from it)."""
        return self.job_output_dir or Path(self.data_dir) / "jobs-out"


def broker_without_qdrant(settings: WorkerSettings) -> str | None:
    """The warning for a broker with an embedded store: each worker would write its own
    folder, which the API never reads (deploy/README.md); None when the setup is consistent."""
    if settings.broker_url and not settings.qdrant_url:
        return (
            "EMBER_BROKER_URL is set without EMBER_QDRANT_URL: workers in other processes write "
            "to their own embedded stores, which this process never sees; set EMBER_QDRANT_URL "
            "to a Qdrant server shared by the API and the workers"
        )
    return None


def get_worker_settings() -> WorkerSettings:
    return read_settings(WorkerSettings)

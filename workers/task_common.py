"""What every task module shares: the job store this worker process writes, whether a job may
still write its build, how an error reads in a job record, and closing it all on shutdown."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from celery import signals

from workers import runtime
from workers.jobs import JobNotFoundError, JobStore, job_store_url, open_job_store

# encoders.training stages: resumable from their checkpoints (``resume``/``overwrite`` params)
BUILTIN_STAGES = frozenset({"mntp", "simcse", "supervised", "llara"})

_job_stores: dict[str, JobStore] = {}


def jobs() -> JobStore:
    settings = runtime.settings()
    key = job_store_url(settings) or str(Path(settings.data_dir).resolve())
    store = _job_stores.get(key)
    if store is None:
        store = _job_stores[key] = open_job_store(settings)
    return store


def job_running(store: JobStore, job_id: str) -> bool:
    """Whether job ``job_id`` may still write its build (it exists and has not finished)."""
    job = store.get(job_id)
    return job is not None and not job.finished


def error_text(exc: BaseException) -> str:
    """What a job record says about an error: the message alone for errors about the input
    (bad records, missing files, unknown trainers), with the exception type otherwise."""
    from indexer.pipeline import BuildError
    from workers.training import TrainerError, UnknownTrainerError

    message = str(exc).strip()
    about_input: tuple[type[BaseException], ...] = (
        ValueError, FileNotFoundError, JobNotFoundError, BuildError, TrainerError,
        UnknownTrainerError,
    )  # fmt: skip
    training = sys.modules.get("encoders.training")  # loaded iff a trainer ran
    if training is not None:
        about_input += (training.TrainingError,)
    if message and isinstance(exc, about_input):
        return message
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


@signals.worker_shutdown.connect
@signals.worker_process_shutdown.connect
def _close_resources(**_: Any) -> None:
    """The worker process owns its store: close it (flushes an embedded store) on shutdown."""
    runtime.reset()
    for store in _job_stores.values():
        store.close()
    _job_stores.clear()

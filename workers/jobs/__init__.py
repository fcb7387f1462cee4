"""Job records: what the API (``GET /jobs/{id}``), the CLI (``ember jobs``) and the tasks share.

The model and the store contract are in :mod:`workers.jobs.model`; two backends implement it:

* :class:`RedisJobStore` (``EMBER_BROKER_URL`` set, :mod:`workers.jobs.redis_store`);
* :class:`FileJobStore` (embedded, no broker, :mod:`workers.jobs.file_store`).

:func:`open_job_store` picks one from the settings. This package imports neither Celery tasks nor
encoders: ``search_api.routes.jobs`` imports it to read and create job records without loading
the worker code.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from workers.jobs.file_store import FileJobStore
from workers.jobs.model import (
    KINDS,
    RETENTION_S,
    STATES,
    TERMINAL,
    BatchOutcome,
    Job,
    JobNotFoundError,
    JobStore,
    new_job_id,
)
from workers.jobs.redis_store import RedisJobStore, redis_client

if TYPE_CHECKING:
    from workers.settings import WorkerSettings

__all__ = [
    "KINDS",
    "RETENTION_S",
    "STATES",
    "TERMINAL",
    "BatchOutcome",
    "FileJobStore",
    "Job",
    "JobNotFoundError",
    "JobStore",
    "RedisJobStore",
    "job_store_url",
    "new_job_id",
    "open_job_store",
    "redis_client",
]


def job_store_url(settings: WorkerSettings) -> str | None:
    """Where job records live: the result backend's Redis, else the broker's; None = embedded."""
    if not settings.broker_url:
        return None
    url = settings.result_backend or settings.broker_url
    return url if url.startswith(("redis://", "rediss://", "unix://")) else settings.broker_url


def open_job_store(settings: WorkerSettings | None = None) -> JobStore:
    if settings is None:
        from workers.settings import get_worker_settings

        settings = get_worker_settings()
    url = job_store_url(settings)
    if url is not None:
        return RedisJobStore(url)
    return FileJobStore(Path(settings.data_dir) / "jobs")

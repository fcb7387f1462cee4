"""Job records as JSON files (embedded, no broker): one file per job under ``data_dir/jobs``,
replaced atomically on every write, so ``ember jobs show`` in another process reads whole
records while the API process runs the job."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from workers.jobs.model import (
    TERMINAL,
    BatchOutcome,
    Job,
    JobNotFoundError,
    JobStore,
    job_from,
    record_of,
)


class FileJobStore(JobStore):
    """``<folder>/<id>.json``, each write under an ``flock`` and replaced atomically."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _path(self, job_id: str) -> Path:
        if not job_id or not all(c.isalnum() or c in "-_" for c in job_id):
            raise JobNotFoundError(job_id)
        return self.folder / f"{job_id}.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock, (self.folder / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read(self, job_id: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self._path(job_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return data

    def _write(self, job_id: str, data: dict[str, Any]) -> None:
        path = self._path(job_id)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(path)

    def _mutate(self, job_id: str, change: Callable[[dict[str, Any]], bool]) -> bool:
        with self._locked():
            data = self._read(job_id)
            if data is None:
                raise JobNotFoundError(job_id)
            if not change(data):
                return False
            self._write(job_id, data)
            return True

    @staticmethod
    def _to_job(data: dict[str, Any]) -> Job:
        batches = {int(k): BatchOutcome.from_dict(v) for k, v in data.get("batches", {}).items()}
        return job_from(data.get("record", {}), batches)

    def _create(self, job: Job) -> None:
        with self._locked():
            self._write(job.id, {"record": record_of(job), "batches": {}, "attempts": {}})

    def _get(self, job_id: str) -> Job | None:
        data = self._read(job_id)
        return None if data is None else self._to_job(data)

    def list(self, limit: int = 20) -> list[Job]:
        jobs = []
        for path in self.folder.glob("*.json"):
            job = self.get(path.stem)
            if job is not None:
                jobs.append(job)
        jobs.sort(key=lambda j: j.created_at, reverse=True)
        return jobs[: max(limit, 1)]

    def update(self, job_id: str, **fields: Any) -> None:
        self._check_fields(fields)

        def change(data: dict[str, Any]) -> bool:
            data["record"].update(fields)
            return True

        self._mutate(job_id, change)

    def _batch(self, job_id: str, outcome: BatchOutcome, bump: bool) -> int:
        attempts = 0

        def change(data: dict[str, Any]) -> bool:
            nonlocal attempts
            counts = data.setdefault("attempts", {})
            key = str(outcome.index)
            if bump:
                counts[key] = int(counts.get(key, 0)) + 1
            attempts = int(counts.get(key, 0))
            outcome.attempts = attempts
            data.setdefault("batches", {})[key] = outcome.to_dict()
            return True

        self._mutate(job_id, change)
        return attempts

    def _finish(self, job_id: str, fields: dict[str, Any]) -> bool:
        def change(data: dict[str, Any]) -> bool:
            record = data["record"]
            if record.get("state") in TERMINAL:
                return False
            record.update(fields, finished_at=time.time())
            return True

        return self._mutate(job_id, change)

"""Job records: what the API (``GET /jobs/{id}``), the CLI (``ember jobs``) and the tasks share.

A job is one record (kind, state, parameters, timestamps, the collection being built) plus one
outcome per batch task (state, attempts, documents, points, error). Progress (done/total, rate,
ETA) is computed from the batch outcomes when a job is read, so it is exact however often a batch
is redelivered: a batch's outcome is keyed by its index and overwritten, never appended.

Two backends, one interface:

* :class:`RedisJobStore` (``EMBER_BROKER_URL`` set): hashes in the result-backend Redis, written by
  the workers, read by the API and the CLI from any process.
* :class:`FileJobStore` (embedded, no broker): one JSON file per job under ``data_dir/jobs``,
  replaced atomically on every write, so ``ember jobs show`` in another process reads whole
  records while the API process runs the job.

An in-process job's record names its owner process (:mod:`workers.owner`); reading a job whose
owner is gone fails it (``owner died``), so a crashed API or CLI leaves no job ``running`` forever.

This module imports neither Celery tasks nor encoders: ``search_api.routes.jobs`` imports it to
read and create job records without loading the worker code.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from encoders.errors import EmberError
from workers.owner import OWNER_DIED, owner_alive

if TYPE_CHECKING:
    import redis

    from indexer.settings import Settings

STATES = ("queued", "planning", "running", "finishing", "succeeded", "failed")
TERMINAL = frozenset({"succeeded", "failed"})
KINDS = ("index", "train", "retrain")
RETENTION_S = 30 * 24 * 3600  # finished job records expire from Redis after 30 days
_FIELDS = (
    "id",
    "kind",
    "state",
    "params",
    "created_at",
    "started_at",
    "finished_at",
    "collection",
    "build",
    "batches_total",
    "documents_total",
    "error",
    "result",
    "skipped",
    "planned",
    "owner",
)
_UPDATABLE = frozenset(_FIELDS) - {"id", "kind", "created_at"}


class JobNotFoundError(EmberError, KeyError):
    status = 404

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id

    def __str__(self) -> str:
        return f"no job {self.job_id!r}"


@dataclass
class BatchOutcome:
    index: int
    state: str  # running | done | failed
    attempts: int = 0
    documents: int = 0
    points: int = 0
    error: str | None = None
    updated_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "state": self.state,
            "attempts": self.attempts,
            "documents": self.documents,
            "points": self.points,
            "error": self.error,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchOutcome:
        return cls(
            index=int(data["index"]),
            state=str(data["state"]),
            attempts=int(data.get("attempts", 0)),
            documents=int(data.get("documents", 0)),
            points=int(data.get("points", 0)),
            error=data.get("error"),
            updated_at=float(data.get("updated_at", 0.0)),
        )


@dataclass
class Job:
    id: str
    kind: str
    state: str = "queued"
    params: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    collection: str | None = None  # the alias an index job serves under
    build: str | None = None  # the versioned collection it writes
    batches_total: int = 0
    documents_total: int = 0
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # corpus records skipped (on_error=skip)
    planned: bool = False  # the batch tasks were sent
    owner: dict[str, Any] | None = None  # the process running an in-process job (workers.owner)
    batches: dict[int, BatchOutcome] = field(default_factory=dict)

    # ---- progress ---------------------------------------------------------------------------
    def _count(self, state: str) -> int:
        return sum(1 for b in self.batches.values() if b.state == state)

    @property
    def batches_done(self) -> int:
        return self._count("done")

    @property
    def batches_failed(self) -> int:
        return self._count("failed")

    @property
    def documents_done(self) -> int:
        return sum(b.documents for b in self.batches.values() if b.state == "done")

    @property
    def documents_failed(self) -> int:
        return sum(b.documents for b in self.batches.values() if b.state == "failed")

    @property
    def points(self) -> int:
        return sum(b.points for b in self.batches.values() if b.state == "done")

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    def rate(self, now: float | None = None) -> float | None:
        """Documents indexed per second since the job started."""
        if self.started_at is None or self.documents_done == 0:
            return None
        end = self.finished_at if self.finished_at is not None else (now or time.time())
        elapsed = max(end - self.started_at, 1e-6)
        return self.documents_done / elapsed

    def eta_s(self, now: float | None = None) -> float | None:
        if self.finished:
            return 0.0
        rate = self.rate(now)
        if not rate or not self.documents_total:
            return None
        left = self.documents_total - self.documents_done - self.documents_failed
        return max(left, 0) / rate

    def errors(self) -> list[dict[str, Any]]:
        return [
            {"batch": b.index, "error": b.error}
            for b in sorted(self.batches.values(), key=lambda b: b.index)
            if b.state == "failed"
        ]

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        rate = self.rate(now)
        total = self.batches_total
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "params": self.params,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "collection": self.collection,
            "build": self.build,
            "progress": {
                "batches_total": total,
                "batches_done": self.batches_done,
                "batches_failed": self.batches_failed,
                "documents_total": self.documents_total,
                "documents_done": self.documents_done,
                "points": self.points,
                "percent": round(100.0 * self.batches_done / total, 1) if total else None,
                "rate_docs_per_s": round(rate, 3) if rate is not None else None,
                "eta_s": round(e, 1) if (e := self.eta_s(now)) is not None else None,
            },
            "errors": self.errors(),
            "skipped": self.skipped,
            "error": self.error,
            "result": self.result,
            "owner": self.owner,
        }

    def summary(self) -> str:
        """One line for ``ember jobs list``."""
        if self.kind == "index":
            what = f"{self.collection or '?'} {self.batches_done}/{self.batches_total} batches"
            if self.batches_failed:
                what += f", {self.batches_failed} failed"
        elif self.kind == "retrain":
            decision = self.result.get("decision") or self.result.get("stage") or "-"
            what = f"{self.collection or '?'} {self.params.get('trainer', '?')}: {decision}"
        else:
            what = str(self.params.get("trainer", "?"))
        return f"{self.id}  {self.kind:<5}  {self.state:<9}  {what}"


def _record(job: Job) -> dict[str, Any]:
    return {name: getattr(job, name) for name in _FIELDS}


def _job_from(record: dict[str, Any], batches: dict[int, BatchOutcome]) -> Job:
    known = {k: v for k, v in record.items() if k in _FIELDS}
    job = Job(**known)
    job.batches = batches
    return job


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobStore(ABC):
    """Job records; every method is safe to call from several processes at once."""

    def create(
        self,
        kind: str,
        params: dict[str, Any],
        job_id: str | None = None,
        owner: dict[str, Any] | None = None,
    ) -> Job:
        """A new queued job; ``owner`` (:func:`workers.owner.current_owner`) for a job that runs
        in this process and dies with it."""
        if kind not in KINDS:
            raise ValueError(f"unknown job kind {kind!r} (use one of {', '.join(KINDS)})")
        job = Job(
            id=job_id or new_job_id(),
            kind=kind,
            params=dict(params),
            created_at=time.time(),
            owner=owner,
        )
        if kind == "index":
            job.collection = params.get("collection")
        elif kind == "retrain":
            job.collection = params.get("alias")
        self._create(job)
        return job

    def require(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job is None:
            raise JobNotFoundError(job_id)
        return job

    def get(self, job_id: str) -> Job | None:
        """The job, or None; an unfinished job whose owner process is gone is failed first
        (``owner died``), so every reader sees it failed and nobody waits for it."""
        job = self._get(job_id)
        if job is not None and not job.finished and owner_alive(job.owner) is False:
            with contextlib.suppress(JobNotFoundError):  # deleted meanwhile: nothing to settle
                self.finish(job_id, "failed", error=OWNER_DIED)
            job = self._get(job_id)
        return self._with_rebuild_progress(job)

    def _with_rebuild_progress(self, job: Job | None) -> Job | None:
        """A retrain job's progress is its rebuild's (the child index job), read as it is."""
        if job is None or job.kind != "retrain":
            return job
        child_id = ((job.result.get("stages") or {}).get("reindex") or {}).get("job")
        child = self._get(str(child_id)) if child_id else None
        if child is not None:
            job.batches = child.batches
            job.batches_total = child.batches_total
            job.documents_total = child.documents_total
        return job

    @abstractmethod
    def _create(self, job: Job) -> None: ...

    @abstractmethod
    def _get(self, job_id: str) -> Job | None: ...

    @abstractmethod
    def list(self, limit: int = 20) -> list[Job]:
        """Newest first."""

    @abstractmethod
    def update(self, job_id: str, **fields: Any) -> None:
        """Set top-level fields (not ``id``, ``kind``, ``created_at``)."""

    @abstractmethod
    def batch_started(self, job_id: str, index: int, documents: int) -> int:
        """Mark batch ``index`` running; returns its attempt number (1 on first delivery)."""

    @abstractmethod
    def batch_done(self, job_id: str, index: int, documents: int, points: int) -> None: ...

    @abstractmethod
    def batch_failed(self, job_id: str, index: int, documents: int, error: str) -> None: ...

    @abstractmethod
    def finish(
        self,
        job_id: str,
        state: str,
        error: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> bool:
        """Move the job to a terminal state once; False when it already was terminal."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @staticmethod
    def _check_fields(fields: dict[str, Any]) -> None:
        bad = [k for k in fields if k not in _UPDATABLE]
        if bad:
            raise ValueError(f"job field {bad[0]!r} cannot be updated")
        state = fields.get("state")
        if state is not None and state not in STATES:
            raise ValueError(f"unknown job state {state!r}")


# ---- Redis --------------------------------------------------------------------------------------
def redis_client(url: str) -> redis.Redis:
    """A client that rides out a Redis restart: commands retry with backoff for ~30 s."""
    import redis as redis_lib
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from redis.retry import Retry

    return redis_lib.Redis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 40),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionResetError],
        socket_timeout=30,
        socket_connect_timeout=5,
        health_check_interval=15,
        decode_responses=True,
    )


def _encoded(fields: dict[str, Any]) -> Any:
    """Hash fields as JSON strings (typed ``Any``: redis-py's mapping type is invariant)."""
    return {k: json.dumps(v) for k, v in fields.items()}


class RedisJobStore(JobStore):
    """``ember:job:<id>`` (hash of JSON fields), ``ember:job:<id>:batches`` (index -> JSON),
    ``ember:job:<id>:attempts`` (index -> deliveries) and ``ember:jobs`` (ids by creation)."""

    prefix = "ember:job:"
    index_key = "ember:jobs"

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = redis_client(url)

    def _key(self, job_id: str, part: str = "") -> str:
        return f"{self.prefix}{job_id}{':' + part if part else ''}"

    def _create(self, job: Job) -> None:
        record = _encoded(_record(job))
        pipe = self.client.pipeline()
        pipe.hset(self._key(job.id), mapping=record)
        pipe.zadd(self.index_key, {job.id: job.created_at})
        pipe.execute()

    def _get(self, job_id: str) -> Job | None:
        pipe = self.client.pipeline()
        pipe.hgetall(self._key(job_id))
        pipe.hgetall(self._key(job_id, "batches"))
        raw, raw_batches = pipe.execute()
        if not raw:
            return None
        record = {k: json.loads(v) for k, v in raw.items()}
        batches = {int(k): BatchOutcome.from_dict(json.loads(v)) for k, v in raw_batches.items()}
        return _job_from(record, batches)

    def list(self, limit: int = 20) -> list[Job]:
        jobs = []
        for raw_id in self.client.zrevrange(self.index_key, 0, max(limit, 1) - 1):
            job_id = str(raw_id)
            job = self.get(job_id)
            if job is None:  # expired record: drop it from the index
                self.client.zrem(self.index_key, job_id)
                continue
            jobs.append(job)
        return jobs

    def update(self, job_id: str, **fields: Any) -> None:
        self._check_fields(fields)
        if fields:
            self.client.hset(self._key(job_id), mapping=_encoded(fields))

    def _put_batch(self, job_id: str, outcome: BatchOutcome) -> None:
        self.client.hset(
            self._key(job_id, "batches"), str(outcome.index), json.dumps(outcome.to_dict())
        )

    def _attempts(self, job_id: str, index: int) -> int:
        value = self.client.hget(self._key(job_id, "attempts"), str(index))
        return int(value) if value else 0

    def batch_started(self, job_id: str, index: int, documents: int) -> int:
        attempts = int(self.client.hincrby(self._key(job_id, "attempts"), str(index), 1))
        self._put_batch(
            job_id, BatchOutcome(index, "running", attempts, documents, 0, None, time.time())
        )
        return attempts

    def batch_done(self, job_id: str, index: int, documents: int, points: int) -> None:
        attempts = self._attempts(job_id, index)
        self._put_batch(
            job_id, BatchOutcome(index, "done", attempts, documents, points, None, time.time())
        )

    def batch_failed(self, job_id: str, index: int, documents: int, error: str) -> None:
        attempts = self._attempts(job_id, index)
        self._put_batch(
            job_id, BatchOutcome(index, "failed", attempts, documents, 0, error, time.time())
        )

    def finish(
        self,
        job_id: str,
        state: str,
        error: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> bool:
        if state not in TERMINAL:
            raise ValueError(f"finish: {state!r} is not a terminal state")
        key = self._key(job_id)
        done = False

        def attempt(pipe: Any) -> None:
            nonlocal done
            current = pipe.hget(key, "state")
            if current is None:
                raise JobNotFoundError(job_id)
            if json.loads(current) in TERMINAL:
                done = False
                return
            fields = {"state": state, "finished_at": time.time(), "error": error}
            if result is not None:
                fields["result"] = result
            pipe.multi()
            pipe.hset(key, mapping=_encoded(fields))
            for part in ("", "batches", "attempts"):
                pipe.expire(self._key(job_id, part), RETENTION_S)
            done = True

        self.client.transaction(attempt, key)
        return done

    def close(self) -> None:
        self.client.close()


# ---- JSON files (embedded) ----------------------------------------------------------------------
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
        return _job_from(data.get("record", {}), batches)

    def _create(self, job: Job) -> None:
        with self._locked():
            self._write(job.id, {"record": _record(job), "batches": {}, "attempts": {}})

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

    def batch_started(self, job_id: str, index: int, documents: int) -> int:
        outcome = BatchOutcome(index, "running", 0, documents, 0, None, time.time())
        return self._batch(job_id, outcome, bump=True)

    def batch_done(self, job_id: str, index: int, documents: int, points: int) -> None:
        outcome = BatchOutcome(index, "done", 0, documents, points, None, time.time())
        self._batch(job_id, outcome, bump=False)

    def batch_failed(self, job_id: str, index: int, documents: int, error: str) -> None:
        outcome = BatchOutcome(index, "failed", 0, documents, 0, error, time.time())
        self._batch(job_id, outcome, bump=False)

    def finish(
        self,
        job_id: str,
        state: str,
        error: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> bool:
        if state not in TERMINAL:
            raise ValueError(f"finish: {state!r} is not a terminal state")

        def change(data: dict[str, Any]) -> bool:
            record = data["record"]
            if record.get("state") in TERMINAL:
                return False
            record.update(state=state, finished_at=time.time(), error=error)
            if result is not None:
                record["result"] = result
            return True

        return self._mutate(job_id, change)


def job_store_url(settings: Settings) -> str | None:
    """Where job records live: the result backend's Redis, else the broker's; None = embedded."""
    if not settings.broker_url:
        return None
    url = settings.result_backend or settings.broker_url
    return url if url.startswith(("redis://", "rediss://", "unix://")) else settings.broker_url


def open_job_store(settings: Settings | None = None) -> JobStore:
    if settings is None:
        from indexer.settings import get_settings

        settings = get_settings()
    url = job_store_url(settings)
    if url is not None:
        return RedisJobStore(url)
    return FileJobStore(Path(settings.data_dir) / "jobs")

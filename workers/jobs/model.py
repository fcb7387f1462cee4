"""The job model: a job record, its batch outcomes and the :class:`JobStore` contract that both
backends (:mod:`workers.jobs.redis_store`, :mod:`workers.jobs.file_store`) implement.

A job is one record (kind, state, parameters, timestamps, the collection being built) plus one
outcome per batch task (state, attempts, documents, points, error). Progress (done/total, rate,
ETA) is computed from the batch outcomes when a job is read, so it is exact however often a batch
is redelivered: a batch's outcome is keyed by its index and overwritten, never appended.

An in-process job's record names its owner process (:mod:`workers.owner`); reading a job whose
owner is gone fails it (``owner died``), so a crashed API or CLI leaves no job ``running`` forever.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

from encoders.errors import EmberError
from workers.owner import OWNER_DIED, owner_alive

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
        return asdict(self)

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


def record_of(job: Job) -> dict[str, Any]:
    """The fields a backend stores for ``job`` (its batches are stored apart)."""
    return {name: getattr(job, name) for name in _FIELDS}


def job_from(record: dict[str, Any], batches: dict[int, BatchOutcome]) -> Job:
    """A :class:`Job` from a stored record and its batch outcomes (unknown fields dropped)."""
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

    def batch_started(self, job_id: str, index: int, documents: int) -> int:
        """Mark batch ``index`` running; returns its attempt number (1 on first delivery)."""
        outcome = BatchOutcome(index, "running", 0, documents, 0, None, time.time())
        return self._batch(job_id, outcome, bump=True)

    def batch_done(self, job_id: str, index: int, documents: int, points: int) -> None:
        outcome = BatchOutcome(index, "done", 0, documents, points, None, time.time())
        self._batch(job_id, outcome, bump=False)

    def batch_failed(self, job_id: str, index: int, documents: int, error: str) -> None:
        outcome = BatchOutcome(index, "failed", 0, documents, 0, error, time.time())
        self._batch(job_id, outcome, bump=False)

    @abstractmethod
    def _batch(self, job_id: str, outcome: BatchOutcome, bump: bool) -> int:
        """Store ``outcome`` with its attempt number (counted up first when ``bump``, a new
        delivery) set on it; returns that number."""

    def finish(
        self,
        job_id: str,
        state: str,
        error: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> bool:
        """Move the job to a terminal state once; False when it already was terminal."""
        if state not in TERMINAL:
            raise ValueError(f"finish: {state!r} is not a terminal state")
        fields: dict[str, Any] = {"state": state, "error": error}
        if result is not None:
            fields["result"] = result
        return self._finish(job_id, fields)

    @abstractmethod
    def _finish(self, job_id: str, fields: dict[str, Any]) -> bool:
        """Set ``fields`` and ``finished_at`` (now) unless the job is terminal already (False);
        :class:`JobNotFoundError` when there is no such job."""

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

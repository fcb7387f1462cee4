"""Build records: which versioned collections are finished, and which unfinished ones are stale.

Every build the pipeline starts carries a record in its collection metadata (key
:data:`~indexer.store.BUILD_META_KEY`), written in the same step that creates the collection::

    {"complete": false, "host": ..., "pid": ..., "pid_start": ..., "boot": ...,
     "started_at": ..., "heartbeat_at": ..., "job": ...}

It is flipped to ``"complete": true`` only after the last upsert, the optimisation and the point
count check, just before the alias switch (:func:`indexer.pipeline.finish_build`). Until then the
collection is listed with ``complete=False``, refuses searches, is never aliased and never
counts as a version kept for rollback. A collection without a record (built by older code)
counts as complete.

**Stale rule.** The next build of the same name (:func:`remove_stale_builds`, called by
:func:`indexer.pipeline.begin_build`: the CLI, the API's in-process jobs and the Celery planner
all start there) deletes an unfinished build only when its builder is known to be gone:

* a build owned by a broker job (``job`` set; its batches run in any worker, on any host): the
  job is no longer running (finished, or its record is gone), as told by the planner's
  ``job_alive`` check; without that check (the CLI) the silence rule below applies;
* a build started by a process on *this* host (same hostname and boot): that process is not
  running any more (no such pid, a zombie, or the pid now belongs to a process started at
  another time); when it is this very process, the build is stale unless this process is
  writing it now (:data:`BUILDING`);
* any other (another host): no heartbeat for ``stale_after_s`` (default 6 hours; a build beats
  at most every :data:`HEARTBEAT_S` seconds while it upserts).

A build being written by another live process is therefore never deleted under it.

``EMBER_TEST_BUILD_PAUSE`` (tests only) names a point where a build stops and waits to be killed:
``batch-<k>`` (after the k-th batch's upsert, :func:`indexer.pipeline.index_documents`),
``upserted`` (after the last upsert, before the optimisation and the completion mark) or
``completed`` (after the mark, before the alias switch). On reaching it the build writes its
collection name to the file ``EMBER_TEST_BUILD_FLAG`` and sleeps.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from indexer.store import BUILD_META_KEY, Store, build_complete

log = logging.getLogger(__name__)

STALE_AFTER_S = 6 * 3600.0
HEARTBEAT_S = 30.0
TEST_PAUSE_ENV = "EMBER_TEST_BUILD_PAUSE"
TEST_FLAG_ENV = "EMBER_TEST_BUILD_FLAG"

# builds this process is writing now (started by begin_build, until marked complete)
BUILDING: set[str] = set()
_beats: dict[str, float] = {}
_lock = threading.Lock()

JobAlive = Callable[[str], bool]


# ---- this process and others on this host ------------------------------------------------------
def _proc_stat(pid: int) -> tuple[str, int] | None:
    """``(state, start time in clock ticks since boot)`` of ``pid`` from ``/proc``, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = raw[raw.rfind(")") + 2 :].split()  # the command name may hold spaces and ')'
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def process_alive(pid: int, start: int | None = None) -> bool:
    """Whether process ``pid`` of this host runs (not a zombie) and, when ``start`` is known,
    is the same process that started at ``start`` (not a later one given the same pid)."""
    if pid <= 0:
        return False
    stat = _proc_stat(pid)
    if stat is not None:
        state, ticks = stat
        return state not in ("Z", "X") and (start is None or ticks == start)
    if Path("/proc/self/stat").exists():  # /proc works and has no such pid
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def owner_record(job: str | None = None) -> dict[str, Any]:
    """The record of a build this process starts now (``job``: the broker job it belongs to)."""
    now = time.time()
    pid = os.getpid()
    record: dict[str, Any] = {
        "complete": False,
        "host": socket.gethostname(),
        "pid": pid,
        "pid_start": _start_ticks(pid),
        "boot": _boot_id(),
        "started_at": now,
        "heartbeat_at": now,
    }
    if job:
        record["job"] = job
    return record


# ---- the rule ---------------------------------------------------------------------------------
def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def stale_reason(
    collection: str,
    record: Mapping[str, Any] | None,
    *,
    job_alive: JobAlive | None = None,
    stale_after_s: float = STALE_AFTER_S,
    now: float | None = None,
) -> str | None:
    """Why the unfinished build ``collection`` (its build record) is stale, or None when it is
    complete or its builder may still be writing it (the rule in the module docstring)."""
    if record is None or build_complete({BUILD_META_KEY: record}):
        return None
    now = time.time() if now is None else now
    job = record.get("job")
    if job and job_alive is not None:
        return None if job_alive(str(job)) else f"its job {job} is no longer running"
    host, pid = record.get("host"), record.get("pid")
    boot = record.get("boot")
    if not job and host == socket.gethostname() and isinstance(pid, int):
        if boot and _boot_id() and boot != _boot_id():
            return f"its builder (pid {pid} on {host}) ran before this host restarted"
        start = record.get("pid_start")
        start = start if isinstance(start, int) else None
        if pid == os.getpid() and start == _start_ticks(pid):
            with _lock:
                mine = collection in BUILDING
            return None if mine else "this process started it and is no longer writing it"
        if process_alive(pid, start):
            return None
        return f"its builder (pid {pid} on {host}) is gone"
    last = max(_number(record.get("heartbeat_at")), _number(record.get("started_at")))
    if now - last > stale_after_s:
        return f"no progress for {now - last:.0f}s (builder {pid} on {host})"
    return None


# ---- records on a store -----------------------------------------------------------------------
def build_record(store: Store, collection: str) -> dict[str, Any] | None:
    record = store.collection_meta(collection).get(BUILD_META_KEY)
    return dict(record) if isinstance(record, Mapping) else None


def started(collection: str) -> None:
    """Note that this process writes ``collection`` now (see the same-process rule)."""
    with _lock:
        BUILDING.add(collection)
        _beats[collection] = time.time()


def forget(collection: str) -> None:
    with _lock:
        BUILDING.discard(collection)
        _beats.pop(collection, None)


def heartbeat(store: Store, collection: str, every_s: float = HEARTBEAT_S) -> None:
    """Record progress on an unfinished build, at most every ``every_s`` seconds per process;
    never fails the batch that calls it."""
    now = time.time()
    with _lock:
        if now - _beats.get(collection, 0.0) < every_s:
            return
        _beats[collection] = now
    try:
        record = build_record(store, collection)
        if record is not None and record.get("complete") is False:
            store.update_collection_meta(
                collection, {BUILD_META_KEY: {**record, "heartbeat_at": now}}
            )
    except Exception:  # progress notes must not fail a batch
        log.warning("could not record progress on build %s", collection, exc_info=True)


def mark_complete(store: Store, collection: str) -> None:
    """Flip ``collection``'s build record to complete (all points written and checked)."""
    record = build_record(store, collection) or {}
    record.update(complete=True, completed_at=time.time())
    store.update_collection_meta(collection, {BUILD_META_KEY: record})
    forget(collection)


def remove_stale_builds(
    store: Store,
    collections: Mapping[str, bool],
    *,
    job_alive: JobAlive | None = None,
    stale_after_s: float = STALE_AFTER_S,
) -> list[str]:
    """Delete the stale ones among ``collections`` (name -> complete); returns their names."""
    removed = []
    for collection, complete in collections.items():
        if complete:
            continue
        try:
            record = build_record(store, collection)
        except KeyError:  # deleted meanwhile
            continue
        reason = stale_reason(collection, record, job_alive=job_alive, stale_after_s=stale_after_s)
        if reason is None:
            continue
        log.warning("deleting unfinished build %s: %s", collection, reason)
        store.delete_collection(collection)
        forget(collection)
        removed.append(collection)
    return removed


def pause_point(point: str, collection: str) -> None:
    """Tests only: stop at ``point`` when ``EMBER_TEST_BUILD_PAUSE`` names it (module docstring)."""
    if os.environ.get(TEST_PAUSE_ENV) != point:
        return
    flag = os.environ.get(TEST_FLAG_ENV)
    if flag:
        tmp = Path(f"{flag}.tmp")
        tmp.write_text(collection)
        os.replace(tmp, flag)
    time.sleep(600)

"""Who runs an in-process job, and whether that process is still alive.

An in-process job (embedded mode: the API's background job thread, or ``ember jobs index``)
lives only in its owner process: its queue and progress are in that process's memory, and
nothing redelivers it. When that process dies (``kill -9``, OOM, a crash) its record would stay
``running`` forever with an ETA that keeps growing. So the record names its owner, and whoever
reads it (the API, ``ember jobs list/show``, from any process) checks that the owner still runs;
if not, the job is failed with ``owner died`` (:meth:`workers.jobs.JobStore.get`).

The owner is identified exactly, not by a heartbeat that could lag: host name, kernel boot id,
PID namespace, pid and the process's start time (``/proc/<pid>/stat``, clock ticks since boot), so
a reused pid or a reboot is not mistaken for the owner. A reader on another host or in another
PID namespace cannot tell and gives no verdict (the job keeps its state).

Celery-run jobs record no owner: with ``task_acks_late`` a killed worker's task is redelivered
(:mod:`workers.recovery`, the visibility timeout) and the job goes on, so its worker dying does
not fail it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from typing import Any

OWNER_DIED = "owner died"


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of process ``pid``; None if gone."""
    raw = _read(f"/proc/{pid}/stat")
    if raw is None:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


@functools.cache
def _boot_id() -> str | None:
    return _read("/proc/sys/kernel/random/boot_id")


def _pid_namespace() -> str | None:
    with contextlib.suppress(OSError):
        return os.readlink("/proc/self/ns/pid")
    return None


def current_owner() -> dict[str, Any] | None:
    """This process as a job owner; None where ``/proc`` cannot identify it (not Linux)."""
    pid = os.getpid()
    stat = _stat(pid)
    if stat is None:
        return None
    return {
        "host": socket.gethostname(),
        "boot_id": _boot_id(),
        "pid_ns": _pid_namespace(),
        "pid": pid,
        "start_ticks": stat[1],
    }


def owner_alive(owner: dict[str, Any] | None) -> bool | None:
    """True if ``owner`` still runs, False if it is gone, None when this process cannot tell
    (no owner recorded, another host, boot or PID namespace, or no ``/proc`` here)."""
    if not isinstance(owner, dict):
        return None
    here = current_owner()
    if here is None:
        return None
    if any(owner.get(key) != here[key] for key in ("host", "boot_id", "pid_ns")):
        return None
    try:
        pid, started = int(owner["pid"]), int(owner["start_ticks"])
    except (KeyError, TypeError, ValueError):
        return None
    stat = _stat(pid)
    if stat is None:
        return False
    state, ticks = stat
    return ticks == started and state not in ("Z", "X")  # a zombie has died, unreaped

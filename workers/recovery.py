"""Restart recovery: give back the tasks a killed worker left unacknowledged.

With ``task_acks_late`` a task's message stays in kombu's Redis ``unacked`` hash until the task
returns. If the worker process dies (``kill -9``, OOM, power loss) nobody acknowledges or rejects
it, and kombu only restores it once it is older than ``visibility_timeout`` -- which must exceed
the longest task, so hours for training.

A worker's node name (``-n index-0@host``) is unique in a deployment and stable across restarts of
the same container or unit, and ``task_track_started`` records that name with every task's
STARTED state. So when a worker starts, before it consumes anything, every unacked message whose
task is STARTED on *this* node name belongs to a previous incarnation of this worker and can go
back to its queue at once (kombu's own ``restore_by_tag``, in a Redis transaction). Messages
delivered but not yet started, or started by another node, are left to the visibility timeout.

Running two live workers under one node name breaks the premise (Celery warns about duplicate
node names); a restored task would then run twice, which the index tasks tolerate (idempotent).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from celery import Celery, signals

log = logging.getLogger(__name__)


def _task_id(raw: Any) -> str | None:
    """The task id inside a kombu ``unacked`` entry ``[payload, exchange, routing_key]``."""
    try:
        payload = json.loads(raw)[0]
        task_id = payload["headers"]["id"]
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    return task_id if isinstance(task_id, str) else None


def orphaned_by(app: Celery, nodename: str) -> list[tuple[str, str]]:
    """``(delivery tag, task id)`` of the unacked messages whose task is STARTED on ``nodename``."""
    found = []
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        entries = channel.client.hgetall(channel.unacked_key)
        for tag, raw in entries.items():
            task_id = _task_id(raw)
            if task_id is None:
                continue
            meta = app.backend.get_task_meta(task_id, cache=False)
            info = meta.get("result")
            started = meta.get("status") == "STARTED" and isinstance(info, dict)
            if started and info.get("hostname") == nodename:
                found.append((tag.decode() if isinstance(tag, bytes) else str(tag), task_id))
    return found


def restore_orphans(app: Celery, nodename: str) -> list[str]:
    """Requeue what ``nodename``'s previous incarnation had started; returns the task ids."""
    orphans = orphaned_by(app, nodename)
    if not orphans:
        return []
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for tag, _task_id in orphans:
            channel.qos.restore_by_tag(tag, channel.client)
    return [task_id for _tag, task_id in orphans]


def connect(app: Celery) -> None:
    """Run :func:`restore_orphans` in ``app``'s workers at start, before they consume."""

    def on_worker_init(sender: Any = None, **_: Any) -> None:
        if app.conf.get("task_always_eager") or getattr(sender, "app", None) is not app:
            return
        nodename = str(getattr(sender, "hostname", ""))
        try:
            restored = restore_orphans(app, nodename)
        except Exception:  # a broker that is still down must not stop the worker starting
            log.warning("could not check for tasks left by a previous %s", nodename, exc_info=True)
            return
        if restored:
            log.warning(
                "requeued %d task(s) that a previous run of %s had started: %s",
                len(restored), nodename, ", ".join(restored),
            )  # fmt: skip

    signals.worker_init.connect(on_worker_init, weak=False)

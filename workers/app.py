"""The Celery app: Redis broker and result backend from ``EMBER_*`` settings.

``celery -A workers.app worker`` (or ``ember worker``) runs it. Importing this module loads Celery
and the settings only; the task code (:mod:`workers.tasks`, which loads encoders) is imported by
the worker at start (``include``) or by :func:`load_tasks`, so the API can send tasks by name
without importing it.

Delivery guarantees (Redis transport, see deploy/README.md "Delivery and recovery"):

* ``task_acks_late`` + ``worker_prefetch_multiplier=1``: a task's message is acknowledged after the
  task returns, and a worker holds at most one unacknowledged message per process. Until then the
  message sits in kombu's ``unacked`` hash (with its delivery time in ``unacked_index``).
* ``task_reject_on_worker_lost``: a prefork child that dies mid-task makes its parent requeue the
  message at once.
* A whole worker killed with ``kill -9`` acknowledges nothing. kombu restores an unacked message
  only when it is older than ``visibility_timeout`` (it cannot tell a dead worker from a slow
  one), so that timeout must exceed the longest task (training: hours). On top of that every
  worker, when it starts and before it consumes, restores the messages its previous incarnation
  (same node name) had started (:mod:`workers.recovery`): a restarted worker resumes in seconds.
* kombu's periodic restore sweep runs every ``unacked_restore_interval`` seconds, but only scans
  Redis on every ``unacked_restore_throttle``-th call (default 10 s x 10 = ~100 s). We set the
  throttle to 1, so an expired message goes back within ``EMBER_UNACKED_RESTORE_INTERVAL``.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.schedules import crontab

from workers.retrain_spec import RetrainSpec, parse_spec
from workers.settings import WorkerSettings, get_worker_settings

log = logging.getLogger(__name__)

INDEX_QUEUE = "index"
TRAIN_QUEUE = "train"
QUEUES = (INDEX_QUEUE, TRAIN_QUEUE)
TASK_QUEUES = {
    "ember.index": INDEX_QUEUE,
    "ember.index_batch": INDEX_QUEUE,
    "ember.finish_index": INDEX_QUEUE,
    "ember.index_failed": INDEX_QUEUE,
    "ember.train": TRAIN_QUEUE,
    "ember.retrain": TRAIN_QUEUE,
    "ember.retrain_train": TRAIN_QUEUE,
    "ember.retrain_evaluate": TRAIN_QUEUE,
    "ember.retrain_reindex": INDEX_QUEUE,
}
TASK_MODULES = ("workers.tasks", "workers.retrain_tasks")
PIPELINES = ("train", "retrain")
# beat entry fields of the retrain pipeline (besides name, cron, pipeline): a RetrainSpec
RETRAIN_FIELDS = frozenset(RetrainSpec.model_fields)
EMBEDDED_BROKER = "memory://"


def transport_options(settings: WorkerSettings) -> dict[str, Any]:
    return {
        "visibility_timeout": settings.visibility_timeout,
        "unacked_restore_interval": settings.unacked_restore_interval,
        "unacked_restore_throttle": 1,  # scan on every sweep (default: every 10th)
        "health_check_interval": 10,
        "socket_timeout": 30,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
    }


def parse_cron(expr: str) -> crontab:
    """``"m h dom mon dow"`` (five fields, as in crontab(5)) -> a Celery ``crontab``."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"cron {expr!r}: expected 5 fields 'minute hour day month weekday'")
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    try:
        return crontab(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month_of_year,
            day_of_week=day_of_week,
        )
    except (ValueError, TypeError) as exc:
        raise ValueError(f"cron {expr!r}: {exc}") from None


def _retrain_entry(entry: dict[str, Any], where: str) -> dict[str, Any]:
    """A ``"pipeline": "retrain"`` entry's task kwargs: its RetrainSpec fields, checked now."""
    fields = {k: v for k, v in entry.items() if k not in ("name", "cron", "pipeline")}
    unknown = sorted(set(fields) - RETRAIN_FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r}")
    try:
        spec = parse_spec(fields)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return {"spec": spec.model_dump()}


def build_beat_schedule(settings: WorkerSettings) -> dict[str, dict[str, Any]]:
    """Celery beat entries from ``EMBER_RETRAIN_SCHEDULE``, on the ``train`` queue at their cron
    time. ``{"name", "cron", "trainer", "params"}`` (``"pipeline": "train"``, the default) runs an
    ``ember.train`` job; ``{"name", "cron", "pipeline": "retrain", "alias", "trainer",
    "eval_set", ...}`` (the fields of :class:`workers.retrain_spec.RetrainSpec`) runs the whole
    retrain pipeline (``ember.retrain``): train, evaluate, rebuild and promote if better."""
    schedule: dict[str, dict[str, Any]] = {}
    for n, entry in enumerate(settings.retrain_schedule):
        where = f"EMBER_RETRAIN_SCHEDULE[{n}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object with cron and trainer")
        pipeline = entry.get("pipeline", "train")
        if pipeline not in PIPELINES:
            raise ValueError(f"{where}: 'pipeline' must be one of {', '.join(PIPELINES)}")
        if pipeline == "train":
            unknown = sorted(set(entry) - {"name", "cron", "trainer", "params", "pipeline"})
            if unknown:
                raise ValueError(f"{where}: unknown field {unknown[0]!r}")
        cron, trainer = entry.get("cron"), entry.get("trainer")
        if not isinstance(cron, str) or not cron.strip():
            raise ValueError(f"{where}: 'cron' must be a crontab string like '0 3 * * 0'")
        if not isinstance(trainer, str) or not trainer:
            raise ValueError(f"{where}: 'trainer' must be a trainer name")
        params = entry.get("params", {})
        if not isinstance(params, dict):
            raise ValueError(f"{where}: 'params' must be an object")
        name = str(entry.get("name") or f"retrain-{trainer}-{n}")
        if name in schedule:
            raise ValueError(f"{where}: duplicate schedule name {name!r}")
        try:
            schedule_obj = parse_cron(cron)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if pipeline == "retrain":
            task = "ember.retrain"
            kwargs = {**_retrain_entry(entry, where), "scheduled": name}
        else:
            task = "ember.train"
            kwargs = {"trainer": trainer, "params": params, "scheduled": name}
        schedule[name] = {
            "task": task,
            "schedule": schedule_obj,
            "kwargs": kwargs,
            "options": {"queue": TRAIN_QUEUE},
        }
    return schedule


def celery_config(settings: WorkerSettings) -> dict[str, Any]:
    common: dict[str, Any] = {
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": INDEX_QUEUE,
        "task_routes": {name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
        "beat_schedule": build_beat_schedule(settings),
        "timezone": "UTC",
    }
    if not settings.broker_url:
        # Embedded: no broker; tasks run in the calling process (``Task.apply``).
        return {
            **common,
            "broker_url": EMBEDDED_BROKER,
            "result_backend": "cache+memory://",
            "task_always_eager": True,
            "task_store_eager_result": False,
        }
    return {
        **common,
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend or settings.broker_url,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_track_started": True,  # STARTED + worker node name: restart recovery reads it
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": transport_options(settings),
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # ride out broker restarts, however long
        # Redis restarts mid-task: keep the task running (it is idempotent); kombu redelivers
        # whatever could not be acknowledged.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_publish_retry_policy": {
            "max_retries": 60,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 2,
        },
        "result_backend_always_retry": True,
        "result_backend_max_retries": 60,
        "result_backend_max_sleep_between_retries_ms": 2000,
        "redis_backend_health_check_interval": 10,
        "redis_socket_timeout": 30,
        "redis_socket_connect_timeout": 5,
        "redis_retry_on_timeout": True,
        "result_expires": 7 * 24 * 3600,
    }


def create_app(settings: WorkerSettings | None = None) -> Celery:
    settings = settings or get_worker_settings()
    app = Celery("ember", include=list(TASK_MODULES))
    app.conf.update(celery_config(settings))
    return app


def load_tasks(app: Celery) -> None:
    """Register the task code in this process (embedded runs; a worker does it at start)."""
    app.loader.import_default_modules()


app = create_app()

# worker start-up hook: restore what this node's previous incarnation left unacknowledged
from workers import recovery  # noqa: E402

recovery.connect(app)

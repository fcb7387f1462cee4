"""Submitting jobs, for the API and the CLI: a job record, then a task sent by name.

With a broker (``EMBER_BROKER_URL``) :func:`submit_index` / :func:`submit_train` create the job
record in Redis and send ``ember.index`` / ``ember.train`` by task name; a worker picks it up. The
caller never imports the task code.

Without a broker (embedded) the same tasks run in this process through ``Task.apply``: in the
foreground (``wait=True``, the CLI) or on one background thread (the API), jobs one at a time. That
thread runs at a lower OS priority and with fewer torch threads than search
(:mod:`workers.priority`), so an index job does not hold up ``/search``.
The task code is loaded by name from the Celery app's task registry. An in-process job's record
names this process as its owner (:mod:`workers.owner`): if the process dies, readers see the job
``failed`` (``owner died``) instead of ``running`` forever; submitting it again starts a new job
(job ids are never reused) on a new build.

An in-process job opens the embedded store before its record is created, so a store locked by
another process (the API running on the same folder) is one clear error and leaves no record.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from workers.jobs import Job, JobStore, new_job_id, open_job_store
from workers.owner import current_owner
from workers.retrain_spec import DEFAULT_MIN_GAIN as DEFAULT_MIN_GAIN  # for the API's request
from workers.retrain_spec import DEFAULT_SPLIT as DEFAULT_SPLIT
from workers.retrain_spec import RetrainSpec, initial_result, parse_spec

if TYPE_CHECKING:
    from celery import Celery

    from encoders import Encoder
    from indexer.store import Store
    from workers.settings import WorkerSettings

#: a task to send: name, queue, args, kwargs
_Task = tuple[str, str, tuple[Any, ...], dict[str, Any]]

_lock = threading.Lock()
_apps: dict[str, Celery] = {}
_executor: ThreadPoolExecutor | None = None


def client_app(settings: WorkerSettings) -> Celery:
    """A Celery app for sending tasks to ``settings.broker_url`` (cached per broker)."""
    from workers.app import create_app

    assert settings.broker_url, "client_app needs a broker"
    key = f"{settings.broker_url}|{settings.result_backend}"
    with _lock:
        app = _apps.get(key)
        if app is None:
            app = _apps[key] = create_app(settings)
        return app


def job_executor(settings: WorkerSettings) -> ThreadPoolExecutor:
    """The one background job thread, below the search threads (:mod:`workers.priority`)."""
    global _executor
    from workers.priority import lower_this_thread

    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix="ember-job",
                initializer=lower_this_thread,
                initargs=(settings.job_nice, settings.job_torch_threads),
            )
        return _executor


def _dispatch(
    settings: WorkerSettings,
    task: _Task,
    task_id: str,
    *,
    wait: bool,
    store: Store | None,
    encoder: Encoder | None,
) -> None:
    """Send ``task`` (name, queue, args, kwargs) to the broker; without one (embedded) run it
    here with ``Task.apply``: in the foreground, or on the background job thread."""
    name, queue, args, kwargs = task
    if settings.broker_url:
        client_app(settings).send_task(name, args=args, kwargs=kwargs, queue=queue, task_id=task_id)
        return
    from workers import runtime
    from workers.app import app, load_tasks

    load_tasks(app)
    runtime.provide(settings=settings, store=store, encoder=encoder)
    registered = app.tasks[name]

    def run() -> Any:
        return registered.apply(args=args, kwargs=kwargs, task_id=task_id)

    if wait:
        run()
    else:
        job_executor(settings).submit(run)


def _submit(
    settings: WorkerSettings,
    kind: str,
    params: dict[str, Any],
    task: _Task,
    job_id: str,
    *,
    wait: bool,
    store: Store | None,
    encoder: Encoder | None,
    result: dict[str, Any] | None = None,
) -> Job:
    """Record job ``job_id`` (owned by this process when it runs here, with a first ``result``
    when given), then send or run its ``task`` (name, queue, args, kwargs); returns the job as
    first recorded."""
    owner = None if settings.broker_url else current_owner()
    job_store = open_job_store(settings)
    try:
        job = job_store.create(kind, params, job_id, owner=owner)
        if result is not None:
            job_store.update(job.id, result=result)
        _dispatch(settings, task, job.id, wait=wait, store=store, encoder=encoder)
        return job_store.require(job.id)
    finally:
        job_store.close()


class IndexArgs(TypedDict, total=False):
    """What an index job is asked to do, as keyword arguments of :func:`index_spec` and
    :func:`submit_index` (one list for both): a corpus ``path`` (read by the worker) or inline
    ``documents``, and the :class:`indexer.spec.IndexSpec` settings."""

    path: str | None
    documents: list[dict[str, Any]] | None
    fmt: str
    on_error: str
    batch_docs: int | None
    chunk_tokens: int | None
    overlap: int | None
    keep_versions: int | None
    payload_indexes: dict[str, str] | None
    encoder_spec: str | None


def index_spec(
    settings: WorkerSettings, collection: str, **args: Unpack[IndexArgs]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checked task spec of an index job (an :class:`indexer.spec.IndexSpec` plus the
    corpus and batching) and the parameters its record shows (inline documents counted, not
    copied); ``ValueError`` naming the bad argument."""
    from pydantic import ValidationError

    from indexer.spec import IndexSpec, spec_error

    path, documents = args.get("path"), args.get("documents")
    batch_docs, encoder_spec = args.get("batch_docs"), args.get("encoder_spec")
    fmt, on_error = args.get("fmt", "auto"), args.get("on_error", "fail")
    chunk_tokens, overlap = args.get("chunk_tokens"), args.get("overlap")
    keep_versions, payload_indexes = args.get("keep_versions"), args.get("payload_indexes")

    given: dict[str, Any] = {
        "collection": collection, "format": fmt, "on_error": on_error,
        "chunk_tokens": chunk_tokens, "overlap": overlap, "keep_versions": keep_versions,
        "payload_indexes": payload_indexes,
    }  # fmt: skip
    try:
        checked = IndexSpec.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        raise ValueError(spec_error(exc)) from None
    if (path is None) == (documents is None):
        raise ValueError("give exactly one of path or documents")
    if documents is not None and not documents:
        raise ValueError("documents: empty list")
    if batch_docs is not None and batch_docs < 1:
        raise ValueError(f"batch_docs must be >= 1, got {batch_docs}")
    spec: dict[str, Any] = {
        **checked.model_dump(),
        "batch_docs": batch_docs or settings.job_batch_docs,
    }
    if encoder_spec:  # else whoever runs the job uses its EMBER_ENCODER
        spec["encoder"] = encoder_spec
    params = dict(spec)
    if path is not None:
        spec["path"] = params["path"] = str(path)
    else:
        spec["documents"] = documents
        params["documents"] = len(documents or [])
    return spec, params


def _embedded_store(settings: WorkerSettings, store: Store | None) -> Store | None:
    """In-process: fail on a locked or unusable store before there is a job record."""
    if settings.broker_url or store is not None:
        return store
    from workers import runtime

    runtime.provide(settings=settings)
    return runtime.get_store()


def submit_index(
    settings: WorkerSettings,
    collection: str,
    *,
    wait: bool = False,
    store: Store | None = None,
    encoder: Encoder | None = None,
    **args: Unpack[IndexArgs],
) -> Job:
    """Create an index job (:class:`IndexArgs`: a corpus ``path`` read by the worker, or inline
    ``documents``, corpus-reader records) into alias ``collection``; returns the job as first
    recorded."""
    spec, params = index_spec(settings, collection, **args)
    store = _embedded_store(settings, store)
    job_id = new_job_id()
    task: _Task = ("ember.index", "index", (job_id, spec), {})
    return _submit(settings, "index", params, task, job_id, wait=wait, store=store, encoder=encoder)


def submit_retrain(
    settings: WorkerSettings,
    spec: RetrainSpec | dict[str, Any],
    *,
    wait: bool = False,
    store: Store | None = None,
    encoder: Encoder | None = None,
) -> Job:
    """Create a retrain job (train -> evaluate -> reindex -> promote, :mod:`workers.retrain`)
    for ``spec``; ``ValueError`` naming the first bad field."""
    checked = parse_spec(spec)
    store = _embedded_store(settings, store)
    job_id = new_job_id()
    task: _Task = ("ember.retrain", "train", (), {"job_id": job_id})
    return _submit(
        settings, "retrain", checked.model_dump(), task, job_id,
        wait=wait, store=store, encoder=encoder, result=initial_result(checked),
    )  # fmt: skip


def submit_train(
    settings: WorkerSettings,
    trainer: str,
    params: dict[str, Any] | None = None,
    *,
    wait: bool = False,
) -> Job:
    """Create a training job running trainer ``trainer`` on the ``train`` queue."""
    if not trainer:
        raise ValueError("trainer: give a trainer name")
    job_id = new_job_id()
    kwargs = {"job_id": job_id, "trainer": trainer, "params": dict(params or {})}
    task: _Task = ("ember.train", "train", (), kwargs)
    return _submit(
        settings, "train", {"trainer": trainer, "params": dict(params or {})}, task, job_id,
        wait=wait, store=None, encoder=None,
    )  # fmt: skip


def wait_for(
    job_store: JobStore,
    job_id: str,
    timeout: float | None = None,
    poll_s: float = 0.5,
    on_progress: Callable[[Job], None] | None = None,
) -> Job:
    """Poll until the job is finished; raises ``TimeoutError`` after ``timeout`` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        job = job_store.require(job_id)
        if on_progress is not None:
            on_progress(job)
        if job.finished:
            return job
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job.state} after {timeout:.0f} s")
        time.sleep(poll_s)

"""The tasks: index jobs (plan -> batches -> finish) and training jobs.

An index job, for a corpus path the worker can read or a list of inline document records:

1. ``ember.index`` (the planner) reads the corpus, starts a new versioned build collection
   (:func:`indexer.pipeline.begin_build`) and sends a chord: one ``ember.index_batch`` per
   ``EMBER_JOB_BATCH_DOCS`` documents, then ``ember.finish_index``.
2. ``ember.index_batch`` validates its documents with the corpus reader's rules, chunks them by
   tokens, encodes and upserts (:func:`indexer.pipeline.index_chunks`). Point ids are derived from
   (document id, chunk index), so a redelivered batch overwrites the same points: no duplicates.
   A document the pipeline rejects fails its batch, with the reason, in the job record; the other
   batches go on.
3. ``ember.finish_index`` (the chord callback; ``ember.index_failed`` is its error callback, run
   when a batch failed) switches the alias with :func:`indexer.pipeline.finish_build` only if every
   batch succeeded and the build holds exactly the points they wrote. Otherwise the job fails, the
   alias keeps serving the previous build and the partial build is deleted (the CLI's
   ``index_corpus`` policy).

Without a broker (embedded) the planner is called with ``Task.apply`` and runs the same batch
and finish tasks in-process, one after another.

A job that came through the broker has its paths checked again here (:mod:`workers.paths`: the
same roots as the API), so a message put on the broker directly cannot read or write elsewhere.

``EMBER_TEST_BATCH_DELAY_S`` (tests only) sleeps that long in each batch after its upsert and
before it reports done, so tests can kill a worker while a batch is in flight.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import Task, chord
from celery.utils.log import get_task_logger

from encoders.errors import EmberError
from indexer.sources import source_record
from workers import runtime
from workers.app import INDEX_QUEUE, TRAIN_QUEUE, app
from workers.paths import confine_input, confine_train_params
from workers.retrain import settle_parent
from workers.task_common import BUILTIN_STAGES as BUILTIN_STAGES
from workers.task_common import _job_stores as _job_stores  # tests clear it
from workers.task_common import error_text, jobs
from workers.task_common import job_running as job_running

if TYPE_CHECKING:
    from indexer.readers import Document

log = get_task_logger(__name__)

TEST_DELAY_ENV = "EMBER_TEST_BATCH_DELAY_S"
MAX_TRANSIENT_RETRIES = 5


class BatchRejectedError(EmberError, ValueError):
    """A document in the batch cannot be indexed (the corpus reader's rules, or no text)."""

    status = 422


def _transient_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        from qdrant_client.http.exceptions import ResponseHandlingException

        errors.append(ResponseHandlingException)
    except ImportError:  # pragma: no cover - qdrant-client is a dependency
        pass
    return tuple(errors)


def document_record(doc: Document) -> dict[str, Any]:
    """A document as a JSON record in the corpus reader's format (what batch messages carry)."""
    return {
        "id": doc.id,
        "text": doc.text,
        "title": doc.title,
        "source": doc.source,
        "metadata": doc.metadata,
    }


def to_document(record: Any, number: int) -> Document:
    """Validate one record with the corpus reader's rules; ``number`` is its 1-based position
    in the job's input."""
    from indexer.readers import BadRecordError, check_size, make_document

    if not isinstance(record, dict):
        raise BatchRejectedError(f"record {number}: expected a JSON object")
    doc = make_document(record, Path("input"), number, "")
    if not isinstance(doc, BadRecordError):
        doc = check_size(doc, "input", number, runtime.settings().max_doc_chars)
    if isinstance(doc, BadRecordError):
        raise BatchRejectedError(f"record {number}: {doc.message}")
    return doc


# ---- index jobs ---------------------------------------------------------------------------------
@app.task(name="ember.index", bind=True)
def index(self: Task, job_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Plan an index job: read the input, begin the build, send the batch tasks."""
    from pydantic import ValidationError

    from indexer.pipeline import begin_build, read_corpus
    from indexer.spec import IndexSpec, spec_error

    store_jobs = jobs()
    job = store_jobs.require(job_id)
    if job.finished or job.planned:  # a redelivered planner: the batches are already out
        return {"job": job_id, "planned": job.planned, "state": job.state}
    store_jobs.update(job_id, state="planning", started_at=job.started_at or time.time())
    try:
        # the same rules as the client's and the CLI's (a spec from the broker is checked again)
        try:
            checked = IndexSpec.model_validate(
                {k: spec[k] for k in IndexSpec.model_fields if k in spec}
            )
        except ValidationError as exc:
            raise ValueError(spec_error(exc)) from None
        collection = checked.collection
        skipped: list[str] = []
        path: str | None = None
        if spec.get("path"):
            path = spec["path"]
            if not self.request.is_eager:  # from the broker: the API's path rules again
                path = confine_input(runtime.settings(), path, ("path",), must_exist=False)
            reader = read_corpus(
                path, fmt=spec.get("format", "auto"), on_error=spec.get("on_error", "fail")
            )
            records = [document_record(doc) for doc in reader]
            skipped = [str(err) for err in reader.errors]
        else:
            records = list(spec.get("documents") or [])
        if not records:
            raise ValueError("no documents to index")
        batch_docs = int(spec.get("batch_docs") or runtime.settings().job_batch_docs)
        if batch_docs < 1:
            raise ValueError(f"batch_docs must be >= 1, got {batch_docs}")
        encoder = runtime.get_encoder(spec.get("encoder"))
        checked.check_encoder(encoder)  # chunks longer than it reads: refused before any build
        store = runtime.get_store()
        # a broker job's batches run in any worker: its build belongs to the job, and a stale
        # build of another job is one whose job stopped (indexer.builds); in-process (eager)
        # the build belongs to this process like the CLI's
        build = job.build
        if build is None:
            # the encoder and corpus it is made of, for retraining (indexer.sources)
            encoder_spec = str(spec.get("encoder") or runtime.settings().encoder)
            source = source_record(
                job_id, encoder_spec, encoder.fingerprint, {**spec, "path": path}
            )
            build = begin_build(
                store, collection, encoder, checked.payload_indexes,
                job=None if self.request.is_eager else job_id,
                job_alive=lambda other: job_running(store_jobs, other), source=source,
            )  # fmt: skip
        store_jobs.update(job_id, build=build)
    except Exception as exc:
        store_jobs.finish(job_id, "failed", error=error_text(exc))
        settle_parent(store_jobs, store_jobs.require(job_id))
        raise

    batches = [records[i : i + batch_docs] for i in range(0, len(records), batch_docs)]
    options = {
        "chunk_tokens": checked.chunk_tokens,
        "overlap": checked.overlap,
        "encoder": spec.get("encoder"),
        "first_record": 0,
        "keep_versions": checked.keep_versions,
    }
    store_jobs.update(
        job_id,
        state="running",
        batches_total=len(batches),
        documents_total=len(records),
        skipped=skipped,
    )
    if self.request.is_eager:  # embedded: the same tasks, in this process, in order
        store_jobs.update(job_id, planned=True)
        for n, batch in enumerate(batches):
            index_batch.apply(args=(job_id, n, batch, {**options, "first_record": n * batch_docs}))
        finish_index.apply(args=(None, job_id))
        return {"job": job_id, "batches": len(batches)}

    header = [
        index_batch.signature(
            (job_id, n, batch, {**options, "first_record": n * batch_docs}), queue=INDEX_QUEUE
        )
        for n, batch in enumerate(batches)
    ]
    body = finish_index.signature((job_id,), queue=INDEX_QUEUE).on_error(
        index_failed.signature(kwargs={"job_id": job_id}, queue=INDEX_QUEUE)
    )
    try:  # publishing retries through a broker restart (task_publish_retry_policy)
        chord(header, body).apply_async()
    except Exception as exc:
        store_jobs.finish(job_id, "failed", error=f"could not send the batches: {exc}")
        settle_parent(store_jobs, store_jobs.require(job_id))
        with contextlib.suppress(Exception):
            runtime.get_store().delete_collection(build)
        raise
    store_jobs.update(job_id, planned=True)
    return {"job": job_id, "batches": len(batches)}


@app.task(name="ember.index_batch", bind=True)
def index_batch(
    self: Task, job_id: str, number: int, records: list[Any], options: dict[str, Any]
) -> dict[str, Any]:
    """Validate, chunk, encode and upsert one batch of documents (idempotent)."""
    from indexer.pipeline import chunk_documents, index_chunks
    from indexer.spec import DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP

    store_jobs = jobs()
    job = store_jobs.require(job_id)
    if job.finished or not job.build:
        return {"batch": number, "skipped": f"job is {job.state}"}
    attempt = store_jobs.batch_started(job_id, number, len(records))
    try:
        first = int(options.get("first_record", 0))
        docs = [to_document(rec, first + i + 1) for i, rec in enumerate(records)]
        encoder = runtime.get_encoder(options.get("encoder"))
        chunks = list(
            chunk_documents(
                docs,
                encoder.tokenizer,
                int(options.get("chunk_tokens", DEFAULT_CHUNK_TOKENS)),
                int(options.get("overlap", DEFAULT_OVERLAP)),
            )
        )
        with_text = {c.doc_id for c in chunks}
        empty = [d.id for d in docs if d.id not in with_text]
        if empty:
            raise BatchRejectedError(f"document {empty[0]!r}: no text to index after tokenizing")
        points = index_chunks(runtime.get_store(), job.build, encoder, chunks)
        delay = float(os.environ.get(TEST_DELAY_ENV) or 0)
        if delay > 0:  # tests only: a window in which the batch is written but not reported
            time.sleep(delay)
    except _transient_errors() as exc:
        if self.request.retries < MAX_TRANSIENT_RETRIES and not self.request.is_eager:
            log.warning("batch %d of job %s: %s; retrying", number, job_id, exc)
            raise self.retry(exc=exc, countdown=min(2**self.request.retries, 30)) from exc
        store_jobs.batch_failed(job_id, number, len(records), error_text(exc))
        raise
    except Exception as exc:
        store_jobs.batch_failed(job_id, number, len(records), error_text(exc))
        raise
    store_jobs.batch_done(job_id, number, len(records), points)
    return {"batch": number, "documents": len(records), "points": points, "attempt": attempt}


def finalize_index(job_id: str, chord_error: str | None = None) -> dict[str, Any]:
    """Switch the alias if every batch succeeded, else fail the job; runs once per job."""
    from indexer.pipeline import BuildError, finish_build, prune_versions

    store_jobs = jobs()
    job = store_jobs.require(job_id)
    if job.finished:
        return job.to_dict()
    store_jobs.update(job_id, state="finishing")
    store = runtime.get_store()
    failed, done, total = job.batches_failed, job.batches_done, job.batches_total
    error: str | None = None
    if failed:
        first = job.errors()[0]
        error = (
            f"{failed} of {total} batches failed; first: batch {first['batch']}: {first['error']}"
        )
    elif done != total:
        error = f"{total - done} of {total} batches did not finish" + (
            f" ({chord_error})" if chord_error else ""
        )
    result: dict[str, Any] = {
        "collection": job.collection,
        "build": job.build,
        "documents": job.documents_done,
        "points": job.points,
    }
    expected = job.params.get("expect_alias")  # a retrain's rebuild: the build it was judged on
    if error is None and expected and store.get_alias(job.collection or "") != expected:
        error = (
            f"alias {job.collection!r} moved to {store.get_alias(job.collection or '')} while "
            f"this build was made to replace {expected}; not switched"
        )
    if error is None:
        assert job.collection and job.build
        try:
            finish_build(store, job.collection, job.build, job.points)
        except BuildError as exc:
            error = str(exc)
        else:
            result["pruned"] = prune_versions(
                store, job.collection, keep=int(job.params.get("keep_versions", 1))
            )
            store_jobs.finish(job_id, "succeeded", result=result)
            settle_parent(store_jobs, store_jobs.require(job_id))
            return store_jobs.require(job_id).to_dict()
    if job.build and store.get_alias(job.collection or "") != job.build:
        try:
            store.delete_collection(job.build)
            result["deleted_build"] = True
        except Exception:  # the job's error matters more than the cleanup's
            log.warning("could not delete partial build %s", job.build, exc_info=True)
    store_jobs.finish(job_id, "failed", error=error, result=result)
    settle_parent(store_jobs, store_jobs.require(job_id))
    return store_jobs.require(job_id).to_dict()


@app.task(name="ember.finish_index")
def finish_index(_results: Any, job_id: str) -> dict[str, Any]:
    """Chord callback: every batch succeeded (Celery calls it only then)."""
    return finalize_index(job_id)


@app.task(name="ember.index_failed")
def index_failed(request: Any, exc: BaseException, traceback: Any, job_id: str) -> dict[str, Any]:
    """Chord error callback: a batch failed; record why and keep the alias where it is."""
    return finalize_index(job_id, chord_error=str(exc))


# ---- training jobs ------------------------------------------------------------------------------
@app.task(name="ember.train", bind=True)
def train(
    self: Task,
    job_id: str | None = None,
    trainer: str = "",
    params: dict[str, Any] | None = None,
    scheduled: str | None = None,
) -> dict[str, Any]:
    """Run trainer ``trainer`` with ``params``; a beat-scheduled run creates its own job.

    A redelivered run (the worker died mid-training) of a built-in stage resumes from its last
    checkpoint instead of refusing the existing output folder."""
    from workers.training import load_all_trainers, run_trainer

    store_jobs = jobs()
    params = dict(params or {})
    if job_id is None:  # beat: the task id names the job
        task_id = self.request.id or None
        existing = store_jobs.get(task_id) if task_id else None
        if existing is None:
            existing = store_jobs.create(
                "train", {"trainer": trainer, "params": params, "scheduled": scheduled}, task_id
            )
        job_id = existing.id
    job = store_jobs.require(job_id)
    if job.finished:
        return job.to_dict()
    rerun = job.state == "running"  # a previous delivery started it and was interrupted
    store_jobs.update(job_id, state="running", started_at=job.started_at or time.time())
    try:
        if not self.request.is_eager:  # from the broker: the API's path rules again
            params = confine_train_params(runtime.settings(), params)
        load_all_trainers(runtime.settings().trainer_modules)
        if rerun and trainer in BUILTIN_STAGES and not params.get("overwrite"):
            params.setdefault("resume", True)  # continue from the last checkpoint
        output = run_trainer(trainer, params)
    except Exception as exc:
        store_jobs.finish(job_id, "failed", error=error_text(exc))
        raise
    store_jobs.finish(job_id, "succeeded", result={"output": str(output)})
    return store_jobs.require(job_id).to_dict()


__all__ = [
    "INDEX_QUEUE",
    "TRAIN_QUEUE",
    "BatchRejectedError",
    "finalize_index",
    "finish_index",
    "index",
    "index_batch",
    "index_failed",
    "job_running",
    "train",
]

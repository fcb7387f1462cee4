"""The retrain pipeline's tasks: ``ember.retrain`` plans, then a chain of three stage tasks.

With a broker, ``ember.retrain`` (queue ``train``; also what beat sends) sends the Celery chain
``ember.retrain_train`` -> ``ember.retrain_evaluate`` (queue ``train``) -> ``ember.retrain_reindex``
(queue ``index``). Embedded (``Task.apply``), the planner runs the same three stages here, in
order. Each stage reads its inputs from the job record, so a redelivered stage (its worker died)
runs again from the record; a finished stage is not run twice. The decisions and the record's
shape are in :mod:`workers.retrain`.

``EMBER_TEST_EVALUATE_DELAY_S`` (tests only) sleeps that long in the evaluate stage after it is
recorded as running, so tests can kill a worker while it evaluates.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import Task, chain

from workers import runtime
from workers.app import INDEX_QUEUE, TRAIN_QUEUE, app
from workers.client import index_spec
from workers.jobs import JobStore
from workers.paths import confine_input, confine_train_params, output_root
from workers.retrain import (
    check_fingerprint,
    corpus_of,
    current_encoder_spec,
    decide,
    evaluate,
    fail_stage,
    initial_result,
    serving_build,
    settle_parent,
    update_stage,
)
from workers.retrain_spec import RetrainSpec, parse_spec
from workers.task_common import BUILTIN_STAGES, error_text, jobs
from workers.tasks import index

RETRAIN_SUBDIR = "retrain"
TEST_EVALUATE_DELAY_ENV = "EMBER_TEST_EVALUATE_DELAY_S"


#: a stage's body: the task, the job id, and the job's store, spec and result
_Stage = Callable[[Task, str, JobStore, RetrainSpec, dict[str, Any]], dict[str, Any]]


def _stage(name: str) -> Callable[[_Stage], Task]:
    """Register stage task ``name`` ``(self, job_id)``: its body runs with the job's store, spec
    and result, unless the job is finished (nothing left to do: a late redelivery)."""

    def register(body: _Stage) -> Task:
        @functools.wraps(body)
        def run(self: Task, job_id: str) -> dict[str, Any]:
            store_jobs = jobs()
            job = store_jobs.require(job_id)
            if job.finished:
                return {"job": job_id, "skipped": "finished"}
            return body(self, job_id, store_jobs, parse_spec(job.params), dict(job.result))

        return app.task(name=name, bind=True)(run)

    return register


@app.task(name="ember.retrain", bind=True)
def retrain(
    self: Task,
    job_id: str | None = None,
    spec: dict[str, Any] | None = None,
    scheduled: str | None = None,
) -> dict[str, Any]:
    """Plan a retrain job; a beat-scheduled run creates its own job record (task id = job id)."""
    store_jobs = jobs()
    if job_id is None:
        checked = parse_spec(spec or {})
        task_id = self.request.id or None
        existing = store_jobs.get(task_id) if task_id else None
        if existing is None:
            params = {**checked.model_dump(), "scheduled": scheduled}
            existing = store_jobs.create("retrain", params, task_id)
            store_jobs.update(existing.id, result=initial_result(checked))
        job_id = existing.id
    job = store_jobs.require(job_id)
    if job.finished or job.planned:
        return {"job": job_id, "planned": job.planned, "state": job.state}
    store_jobs.update(job_id, state="running", started_at=job.started_at or time.time())
    if self.request.is_eager:  # embedded: the same stages, in this process, in order
        store_jobs.update(job_id, planned=True)
        for stage in (retrain_train, retrain_evaluate, retrain_reindex):
            stage.apply(args=(job_id,), throw=False)
            if store_jobs.require(job_id).finished:
                break
        job = store_jobs.require(job_id)
        if not job.finished:  # a stage stopped without recording why (a bug): do not hang
            stage = job.result.get("stage") or "train"
            fail_stage(store_jobs, job_id, stage, "stopped without an outcome")
        return store_jobs.require(job_id).to_dict()
    try:
        chain(
            retrain_train.si(job_id).set(queue=TRAIN_QUEUE),
            retrain_evaluate.si(job_id).set(queue=TRAIN_QUEUE),
            retrain_reindex.si(job_id).set(queue=INDEX_QUEUE),
        ).apply_async()
    except Exception as exc:
        store_jobs.finish(job_id, "failed", error=f"could not send the stages: {exc}")
        raise
    store_jobs.update(job_id, planned=True)
    return {"job": job_id, "planned": True}


@_stage("ember.retrain_train")
def retrain_train(
    self: Task, job_id: str, store_jobs: JobStore, spec: RetrainSpec, result: dict[str, Any]
) -> dict[str, Any]:
    """Train the candidate from the encoder serving the alias."""
    from workers.training import load_all_trainers, run_trainer

    stage = result.get("stages", {}).get("train", {})
    if stage.get("state") == "done":
        return {"job": job_id, "train": "done"}
    rerun = stage.get("state") == "running"  # a previous delivery was interrupted
    try:
        settings = runtime.settings()
        store = runtime.get_store()
        build = serving_build(store, spec.alias)
        corpus = corpus_of(store, build, spec)  # before training: no rebuild, no point in it
        current = current_encoder_spec(store, build, spec, settings)
        params = dict(spec.params)
        if not self.request.is_eager:  # from the broker: the API's path rules again
            params = confine_train_params(settings, params)
            if spec.current_encoder:
                current = confine_train_params(settings, {"from": current})["from"]
        encoder = runtime.get_encoder(current)
        check_fingerprint(encoder, current, build)
        params.setdefault(
            "out", str(Path(output_root(settings).path or ".") / RETRAIN_SUBDIR / job_id)
        )
        params["from"] = current
        update_stage(
            store_jobs, job_id, "train",
            {"current": {"build": build, "encoder": current, "fingerprint": encoder.fingerprint,
                         "corpus": corpus}},
            state="running", trainer=spec.trainer, output=params["out"],
        )  # fmt: skip
        load_all_trainers(settings.trainer_modules)
        if rerun and spec.trainer in BUILTIN_STAGES and not params.get("overwrite"):
            params.setdefault("resume", True)  # continue from the last checkpoint
        elif rerun and spec.trainer not in BUILTIN_STAGES:
            shutil.rmtree(params["out"], ignore_errors=True)  # a half-written folder: start over
        output = run_trainer(spec.trainer, params)
    except Exception as exc:
        fail_stage(store_jobs, job_id, "train", error_text(exc))
        raise
    update_stage(store_jobs, job_id, "train", state="done", output=str(output))
    return {"job": job_id, "train": str(output)}


@_stage("ember.retrain_evaluate")
def retrain_evaluate(
    self: Task, job_id: str, store_jobs: JobStore, spec: RetrainSpec, result: dict[str, Any]
) -> dict[str, Any]:
    """Score candidate and current on the same split; reject the candidate, or let it through."""
    from indexer.evaluation import load_beir

    if result.get("stages", {}).get("evaluate", {}).get("state") == "done":
        return {"job": job_id, "evaluate": "done"}
    try:
        current = result.get("current") or {}
        candidate_spec = str(result["stages"]["train"]["output"])
        eval_set = spec.eval_set
        if not self.request.is_eager:
            eval_set = confine_input(runtime.settings(), eval_set, ("eval_set",))
        update_stage(store_jobs, job_id, "evaluate", state="running", eval_set=eval_set,
                     split=spec.split)  # fmt: skip
        time.sleep(float(os.environ.get(TEST_EVALUATE_DELAY_ENV) or 0))
        dataset = load_beir(eval_set, spec.split)
        candidate = runtime.get_encoder(candidate_spec)
        scores = {
            "current": evaluate(runtime.get_encoder(current["encoder"]), dataset, spec),
            "candidate": evaluate(candidate, dataset, spec),
        }
        ours, theirs = scores["current"][spec.metric], scores["candidate"][spec.metric]
        promote, reason = decide(float(ours), float(theirs), spec)
    except Exception as exc:
        fail_stage(store_jobs, job_id, "evaluate", error_text(exc))
        raise
    summary = {
        "candidate": {"encoder": candidate_spec, "fingerprint": candidate.fingerprint},
        "scores": {"current": ours, "candidate": theirs, "gain": theirs - ours},
        "decision": "promote" if promote else "rejected",
        "reason": reason,
    }
    result = update_stage(
        store_jobs, job_id, "evaluate", summary, state="done", queries=scores["current"]["queries"],
        current=scores["current"], candidate=scores["candidate"],
    )  # fmt: skip
    if not promote:
        for later in ("reindex", "promote"):
            result = update_stage(store_jobs, job_id, later, state="skipped")
        result["stage"] = "evaluate"
        store_jobs.finish(job_id, "succeeded", result=result)
    return {"job": job_id, "promote": promote}


@_stage("ember.retrain_reindex")
def retrain_reindex(
    self: Task, job_id: str, store_jobs: JobStore, spec: RetrainSpec, result: dict[str, Any]
) -> dict[str, Any]:
    """Rebuild the alias's corpus with the candidate as a child index job; its alias switch is
    the promotion (recorded here by :func:`workers.retrain.settle_parent`)."""
    if result.get("decision") != "promote":
        return {"job": job_id, "skipped": "not promoted"}
    child_id = result.get("stages", {}).get("reindex", {}).get("job")
    try:
        if child_id is None:
            settings = runtime.settings()
            current = result["current"]
            corpus = current["corpus"]
            child_spec, child_params = index_spec(
                settings, spec.alias, path=corpus["path"], fmt=corpus["format"],
                on_error=corpus["on_error"], chunk_tokens=corpus.get("chunk_tokens"),
                overlap=corpus.get("overlap"), encoder_spec=result["candidate"]["encoder"],
            )  # fmt: skip
            extra = {"parent": job_id, "expect_alias": current["build"],
                     "keep_versions": spec.keep_versions}  # fmt: skip
            child_spec.update(extra)
            child_params.update(extra)
            owner = store_jobs.require(job_id).owner
            child_id = store_jobs.create("index", child_params, owner=owner).id
            update_stage(store_jobs, job_id, "reindex", state="running", job=child_id,
                         corpus=corpus)  # fmt: skip
        else:
            child_spec = {**store_jobs.require(child_id).params}
        if self.request.is_eager:
            index.apply(args=(child_id, child_spec), task_id=child_id, throw=False)
        else:  # the index queue plans it like any index job (idempotent if redelivered)
            index.apply_async((child_id, child_spec), queue=INDEX_QUEUE, task_id=child_id)
    except Exception as exc:
        fail_stage(store_jobs, job_id, "reindex", error_text(exc))
        raise
    child = store_jobs.require(child_id)
    settle_parent(store_jobs, child)  # the child finished here (eager); else its finish does it
    return {"job": job_id, "reindex": child_id}


__all__ = ["retrain", "retrain_evaluate", "retrain_reindex", "retrain_train"]

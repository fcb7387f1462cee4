"""The retrain pipeline's decisions and its job record (its tasks: :mod:`workers.retrain_tasks`).

One retrain job (kind ``retrain``) runs four stages, each recorded in ``result["stages"]`` with
its state (``pending | running | done | failed | skipped``), times and what it produced:

1. **train**: a registered trainer, ``from`` the encoder serving the alias (what the serving build
   records, :mod:`indexer.sources`), into a new encoder folder (the candidate);
2. **evaluate**: candidate and current encoder on the same BEIR split (exact dense retrieval,
   :func:`indexer.evaluation.beir.evaluate_dense`); both scores and the gain are recorded. The
   candidate is promoted only if ``candidate - current >= min_gain``; otherwise the job ends
   ``succeeded`` with ``decision: rejected``, both scores and the reason, and nothing moves;
3. **reindex**: a child index job (kind ``index``, ``params.parent`` = the retrain job) rebuilds
   the alias's corpus with the candidate through the ordinary index path: deterministic point
   ids, the count check, a partial build dropped on failure;
4. **promote**: that child's own alias switch (:func:`indexer.pipeline.finish_build`), the last
   step, refused if the alias moved meanwhile (``expect_alias``). :func:`settle_parent`, called
   when the child finishes, records the outcome on the retrain job.

A stage killed half-way leaves the alias on the complete build it served: nothing before the
child's final switch touches it. Under Celery the stage's message is redelivered (acks late) and
the stage runs again (a built-in trainer resumes from its checkpoint); in-process, the job and
its child name their owner process and are failed ``owner died`` when it is gone.

The reindex stage's progress is the child's: :meth:`workers.jobs.JobStore.get` shows the child's
batches as the retrain job's ``progress``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from encoders.errors import EmberError
from indexer.sources import read_source
from workers.retrain_spec import STAGES, RetrainSpec, initial_result

if TYPE_CHECKING:
    from encoders import Encoder
    from indexer.store import Store
    from workers.jobs import Job, JobStore
    from workers.settings import WorkerSettings


__all__ = ["RetrainError", "initial_result", "settle_parent", "update_stage"]


class RetrainError(EmberError, ValueError):
    """The retrain cannot go on (no serving build, unknown encoder or corpus); nothing moved."""

    status = 422


def update_stage(
    jobs: JobStore, job_id: str, stage: str, result: Mapping[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    """Merge ``fields`` into stage ``stage`` (and ``result`` into the top of the record); the
    stages run one after another, so this read-modify-write has no concurrent writer."""
    job = jobs.require(job_id)
    merged = dict(job.result)
    stages = {k: dict(v) for k, v in (merged.get("stages") or {}).items()}
    entry = stages.setdefault(stage, {})
    if fields.get("state") == "running" and entry.get("state") != "running":
        entry["started_at"] = time.time()
    if fields.get("state") in ("done", "failed", "skipped"):
        entry["finished_at"] = time.time()
    entry.update(fields)
    merged["stages"] = stages
    merged["stage"] = stage
    merged.update(result or {})
    jobs.update(job_id, result=merged)
    return merged


def fail_stage(jobs: JobStore, job_id: str, stage: str, error: str) -> None:
    result = update_stage(jobs, job_id, stage, state="failed", error=error)
    for later in STAGES[STAGES.index(stage) + 1 :]:
        result["stages"][later] = {**result["stages"].get(later, {}), "state": "skipped"}
    jobs.finish(job_id, "failed", error=f"{stage}: {error}", result=result)


# ---- what serves the alias ----------------------------------------------------------------------
def serving_build(store: Store, alias: str) -> str:
    from indexer.pipeline import parse_version

    build = store.get_alias(alias)
    if build is None:
        raise RetrainError(f"alias {alias!r} serves no build: index it first")
    if parse_version(build) is None:
        raise RetrainError(f"alias {alias!r} serves {build!r}, not a versioned build")
    return build


def build_fingerprint(build: str) -> str:
    from indexer.pipeline import parse_version

    parsed = parse_version(build)
    assert parsed is not None
    return parsed[1]


def current_encoder_spec(
    store: Store, build: str, spec: RetrainSpec, settings: WorkerSettings
) -> str:
    """The encoder spec the serving ``build`` was made with: the caller's ``current_encoder``,
    else what the build records, else ``EMBER_ENCODER`` (checked against the fingerprint by
    :func:`check_fingerprint`)."""
    if spec.current_encoder:
        return spec.current_encoder
    recorded = read_source(store, build).get("encoder") or {}
    if isinstance(recorded.get("spec"), str) and recorded["spec"]:
        return str(recorded["spec"])
    return settings.encoder


def check_fingerprint(encoder: Encoder, encoder_spec: str, build: str) -> None:
    expected = build_fingerprint(build)
    if encoder.fingerprint != expected:
        raise RetrainError(
            f"build {build} was made by an encoder with fingerprint {expected}, but "
            f"{encoder_spec!r} has fingerprint {encoder.fingerprint}; give current_encoder"
        )


def corpus_of(store: Store, build: str, spec: RetrainSpec) -> dict[str, Any]:
    """Where the rebuild reads its documents: the caller's ``corpus``, else the corpus path the
    serving build records; its chunking is the serving build's."""
    record = read_source(store, build)
    chunking = dict(record.get("chunking") or {})
    if spec.corpus:
        return {"path": spec.corpus, "format": spec.format, "on_error": "fail", **chunking}
    corpus = record.get("corpus") or {}
    if isinstance(corpus.get("path"), str):
        return {
            "path": corpus["path"],
            "format": corpus.get("format", "auto"),
            "on_error": corpus.get("on_error", "fail"),
            **chunking,
        }
    if "inline" in corpus:
        why = "was indexed from inline documents, which are not kept"
    else:
        why = "records no corpus (made before builds recorded one, or by ember index)"
    raise RetrainError(f"build {build} {why}: give corpus, the path to rebuild it from")


# ---- evaluation ---------------------------------------------------------------------------------
def query_instruction(encoder: Encoder, spec: RetrainSpec) -> str | None:
    from indexer.evaluation import default_instruction

    if spec.no_instruction:
        return None
    if spec.instruction is not None:
        return spec.instruction
    return default_instruction(encoder, spec.task)


def evaluate(encoder: Encoder, dataset: Any, spec: RetrainSpec) -> dict[str, Any]:
    """All retrieval scores of ``encoder`` on ``dataset`` (exact dense, BEIR scoring)."""
    from indexer.evaluation.beir import evaluate_dense

    instruction = query_instruction(encoder, spec)
    result = evaluate_dense(encoder, dataset, instruction=instruction)
    return {
        **result.scores.as_dict(),
        "fingerprint": encoder.fingerprint,
        "instruction": instruction,
    }


def decide(current: float, candidate: float, spec: RetrainSpec) -> tuple[bool, str]:
    """(promote?, why) for the two scores on ``spec.metric``."""
    gain = candidate - current
    scores = f"candidate {spec.metric} {candidate:.4f} vs current {current:.4f} (gain {gain:+.4f})"
    if gain >= spec.min_gain:
        return True, f"{scores} >= min_gain {spec.min_gain}"
    return False, f"{scores} < min_gain {spec.min_gain}; nothing moved"


# ---- promotion ----------------------------------------------------------------------------------
def settle_parent(jobs: JobStore, child: Job) -> None:
    """Record a finished rebuild on its retrain job (``child.params.parent``) and finish that:
    the child switched the alias (promoted) or failed (the alias still serves the old build)."""
    parent_id = child.params.get("parent")
    if not parent_id or not child.finished:
        return
    parent = jobs.get(str(parent_id))
    if parent is None or parent.finished:
        return
    previous = (parent.result.get("current") or {}).get("build")
    reindex: dict[str, Any] = {
        "job": child.id,
        "build": child.build,
        "points": child.points,
        "documents": child.documents_done,
    }
    if child.state == "succeeded":
        update_stage(jobs, parent.id, "reindex", state="done", **reindex)
        result = update_stage(
            jobs, parent.id, "promote", {"decision": "promoted", "build": child.build},
            state="done", alias=child.collection, build=child.build, previous=previous,
        )  # fmt: skip
        jobs.update(parent.id, build=child.build)
        jobs.finish(parent.id, "succeeded", result=result)
        return
    update_stage(jobs, parent.id, "reindex", state="failed", error=child.error, **reindex)
    result = update_stage(jobs, parent.id, "promote", state="skipped")
    reason = f"reindex: {child.error}; alias {child.collection!r} still serves {previous}"
    jobs.finish(parent.id, "failed", error=reason, result=result)

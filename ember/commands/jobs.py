"""``ember jobs`` (index, training and retrain jobs), ``ember worker`` and ``ember beat``.

With ``EMBER_BROKER_URL`` set, ``ember jobs index`` sends the job to the workers (``ember worker``)
and returns its id; ``--wait`` follows its progress. Without a broker the job runs here, in this
process, with the same task code (embedded mode).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ember.commands.options import (
    choice_option,
    chunk_options,
    format_option,
    instruction_options,
    json_object,
    on_error_option,
)
from ember.errors import UserError

if TYPE_CHECKING:
    from workers.jobs import Job, JobStore
    from workers.settings import WorkerSettings

FORMATS = ["auto", "jsonl", "beir", "csv", "dir"]


def _settings() -> WorkerSettings:
    from workers.settings import get_worker_settings

    return get_worker_settings()


def _job_store(settings: WorkerSettings) -> JobStore:
    from workers.jobs import open_job_store

    return open_job_store(settings)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def describe(job: Job) -> str:
    """A job as a few human-readable lines."""
    data = job.to_dict()
    progress = data["progress"]
    lines = [
        f"job        {job.id}",
        f"kind       {job.kind}",
        f"state      {job.state}",
        f"created    {_when(job.created_at)}",
        f"started    {_when(job.started_at)}",
        f"finished   {_when(job.finished_at)}",
    ]
    if job.kind == "index":
        lines += [
            f"collection {job.collection}",
            f"build      {job.build or '-'}",
            f"batches    {progress['batches_done']}/{progress['batches_total']} done, "
            f"{progress['batches_failed']} failed",
            f"documents  {progress['documents_done']}/{progress['documents_total']}, "
            f"{progress['points']} points",
        ]
        if progress["rate_docs_per_s"] is not None:
            eta = progress["eta_s"]
            lines.append(
                f"rate       {progress['rate_docs_per_s']:.1f} docs/s"
                + (f", ETA {eta:.0f} s" if eta is not None and not job.finished else "")
            )
        for err in data["errors"]:
            lines.append(f"error      batch {err['batch']}: {err['error']}")
        for skipped in job.skipped:
            lines.append(f"skipped    {skipped}")
    elif job.kind == "retrain":
        lines += _describe_retrain(job, progress)
    else:
        lines.append(f"trainer    {job.params.get('trainer')}")
        if job.result.get("output"):
            lines.append(f"output     {job.result['output']}")
    if job.owner:  # an in-process job: the process that runs it
        lines.append(f"owner      pid {job.owner.get('pid')} on {job.owner.get('host')}")
    if job.error:
        lines.append(f"reason     {job.error}")
    return "\n".join(lines)


def _describe_retrain(job: Job, progress: dict[str, Any]) -> list[str]:
    result = job.result
    current, candidate = result.get("current") or {}, result.get("candidate") or {}
    lines = [
        f"alias      {job.collection}",
        f"trainer    {job.params.get('trainer')}",
        f"current    {current.get('build', '-')} ({current.get('encoder', '-')})",
    ]
    if candidate:
        lines.append(f"candidate  {candidate.get('encoder')} [{candidate.get('fingerprint')}]")
    for stage, entry in (result.get("stages") or {}).items():
        extra = f" ({entry['error']})" if entry.get("error") else ""
        if stage == "reindex" and entry.get("job"):
            extra += (
                f" job {entry['job']}, batches {progress['batches_done']}/"
                f"{progress['batches_total']}"
            )
        lines.append(f"stage      {stage:<9} {entry.get('state', '-')}{extra}")
    scores = result.get("scores")
    if scores:
        lines.append(
            f"scores     {result.get('metric')}: current {scores['current']:.4f}, "
            f"candidate {scores['candidate']:.4f}, gain {scores['gain']:+.4f} "
            f"(min_gain {result.get('min_gain')})"
        )
    if result.get("decision"):
        lines.append(f"decision   {result['decision']}: {result.get('reason')}")
    return lines


def _progress_line(job: Job) -> str:
    if job.kind == "retrain":
        stage = job.result.get("stage") or "-"
        return f"{job.state}: {stage}" + (
            f", batches {job.batches_done}/{job.batches_total}" if job.batches_total else ""
        )
    if job.kind != "index":
        return f"{job.state}"
    line = f"{job.state}: batches {job.batches_done}/{job.batches_total}"
    if job.batches_failed:
        line += f" ({job.batches_failed} failed)"
    rate = job.rate()
    if rate:
        line += f", {rate:.1f} docs/s"
        eta = job.eta_s()
        if eta is not None and not job.finished:
            line += f", ETA {eta:.0f} s"
    return line


def _follow(settings: WorkerSettings, job_id: str, timeout: float | None) -> Job:
    from workers.client import wait_for

    last = [""]

    def show(job: Job) -> None:
        line = _progress_line(job)
        if line != last[0]:
            click.echo(line, err=True)
            last[0] = line

    store = _job_store(settings)
    try:
        return wait_for(store, job_id, timeout=timeout, on_progress=show)
    finally:
        store.close()


def _finish(job: Job, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(job.to_dict(), indent=2))
    else:
        click.echo(describe(job))
    if job.state == "failed":
        sys.exit(1)


def _report(
    settings: WorkerSettings, job: Job, *, embedded: bool, wait: bool, as_json: bool
) -> None:
    """A submitted job: in-process it has run, so print its record; with a broker print its
    id, then follow it to its end when --wait asks (else say how to follow it)."""
    if embedded:
        _finish(job, as_json)
        return
    click.echo(job.id)
    if wait:
        _finish(_follow(settings, job.id, None), as_json)
    else:
        click.echo(f"queued; follow it with: ember jobs show {job.id} --wait", err=True)


def submit_options(f: Any) -> Any:
    """--wait and --json, as every submitting command takes them (see :func:`_report`)."""
    f = click.option("--json", "as_json", is_flag=True, help="Print the final JSON record.")(f)
    return click.option(
        "--wait/--no-wait", default=False, help="With a broker: follow the job to its end."
    )(f)


@click.group("jobs")
def jobs_group() -> None:
    """Index and training jobs: submit them, list them, follow their progress."""


@jobs_group.command("list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON records.")
def list_command(limit: int, as_json: bool) -> None:
    """The newest jobs first."""
    store = _job_store(_settings())
    try:
        jobs = store.list(limit)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps([j.to_dict() for j in jobs], indent=2))
        return
    if not jobs:
        click.echo("no jobs", err=True)
    for job in jobs:
        click.echo(job.summary())


@jobs_group.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON record (as GET /jobs/ID).")
@click.option("--wait", is_flag=True, help="Follow the job until it finishes.")
def show_command(job_id: str, as_json: bool, wait: bool) -> None:
    """A job's state, progress (done/total, rate, ETA) and errors."""
    settings = _settings()
    if wait:
        try:
            job = _follow(settings, job_id, None)
        except KeyError:
            raise UserError(f"no job {job_id!r}") from None
    else:
        store = _job_store(settings)
        try:
            found = store.get(job_id)
        finally:
            store.close()
        if found is None:
            raise UserError(f"no job {job_id!r}")
        job = found
    _finish(job, as_json)


@jobs_group.command("index")
@click.argument("path", type=click.Path(exists=False))
@click.option("--collection", "-c", required=True, help="Alias to build and serve.")
@format_option(FORMATS, "auto")
@on_error_option("A bad corpus record fails the job, or is skipped and listed in the job.")
@click.option(
    "--batch-docs",
    type=click.IntRange(min=1),
    default=None,
    help="Documents per batch task [env EMBER_JOB_BATCH_DOCS; default 64].",
)
@chunk_options(min_tokens=1, defaults=False)
@submit_options
def index_command(
    path: str,
    collection: str,
    fmt: str,
    on_error: str,
    batch_docs: int | None,
    chunk_tokens: int | None,
    overlap: int | None,
    wait: bool,
    as_json: bool,
) -> None:
    """Index a corpus (JSONL, BEIR folder, CSV, folder of .txt/.md) into COLLECTION as a job.

    \b
    With a broker the workers read PATH, so it must be visible to them (a shared volume).
    Without one the job runs in this process.
    """
    from indexer.store import StoreError
    from workers.client import submit_index

    settings = _settings()
    embedded = not settings.broker_url
    source = str(Path(path).resolve()) if embedded else path
    try:
        job = submit_index(
            settings, collection, path=source, fmt=fmt, on_error=on_error,
            batch_docs=batch_docs, chunk_tokens=chunk_tokens, overlap=overlap, wait=embedded,
        )  # fmt: skip
    except (ValueError, StoreError) as exc:  # a locked store: one line, no job record
        raise UserError(str(exc)) from None
    _report(settings, job, embedded=embedded, wait=wait, as_json=as_json)


@jobs_group.command("train")
@click.argument("trainer")
@click.option("--params", default="{}", help="Trainer parameters as a JSON object.")
@submit_options
def train_command(trainer: str, params: str, wait: bool, as_json: bool) -> None:
    """Run TRAINER (from EMBER_TRAINER_MODULES) as a job on the `train` queue."""
    from workers.client import submit_train

    parsed = json_object("--params", params)
    settings = _settings()
    embedded = not settings.broker_url
    try:
        job = submit_train(settings, trainer, parsed, wait=embedded)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    _report(settings, job, embedded=embedded, wait=wait, as_json=as_json)


@jobs_group.command("retrain")
@click.argument("alias")
@click.option("--trainer", required=True, help="A registered trainer (supervised, simcse, ...).")
@click.option("--params", default="{}", help="Trainer parameters as a JSON object (no 'from').")
@click.option(
    "--eval-set", required=True, help="BEIR folder the candidate and current encoder are scored on."
)
@click.option("--split", default="train", show_default=True, help="qrels split to compare on.")
@click.option("--allow-test", is_flag=True, help="Allow --split test (it stops being a test).")
@choice_option("--metric", choices=["ndcg@10", "recall@100", "mrr@10"], default="ndcg@10")
@click.option(
    "--min-gain",
    type=click.FloatRange(0.0, 1.0),
    default=0.005,
    show_default=True,
    help="Promote only if candidate - current >= this.",
)
@instruction_options(
    task=("web_search", "Query instruction task."),
    instruction="Query instruction (default: the task's).",
    no_instruction="Encode queries with no instruction.",
)
@click.option(
    "--corpus", default=None, help="Rebuild from this corpus (default: the recorded one)."
)
@format_option(FORMATS, "auto")
@click.option("--current-encoder", default=None, help="For builds that record no encoder.")
@click.option("--keep-versions", type=click.IntRange(0, 100), default=1, show_default=True)
@submit_options
def retrain_command(
    alias: str,
    trainer: str,
    params: str,
    eval_set: str,
    split: str,
    allow_test: bool,
    metric: str,
    min_gain: float,
    task: str,
    instruction: str | None,
    no_instruction: bool,
    corpus: str | None,
    fmt: str,
    current_encoder: str | None,
    keep_versions: int,
    wait: bool,
    as_json: bool,
) -> None:
    """Retrain the encoder serving ALIAS; promote the candidate only if it scores better.

    \b
    train (from the serving encoder) -> evaluate candidate and current on --eval-set ->
    if candidate - current >= --min-gain: rebuild ALIAS's corpus with it and move the alias;
    else the job records 'rejected' with both scores and nothing moves.
    """
    from workers.client import submit_retrain

    parsed = json_object("--params", params)
    settings = _settings()
    embedded = not settings.broker_url

    def local(path: str | None) -> str | None:  # in-process: paths as this shell sees them
        return str(Path(path).resolve()) if path and embedded else path

    spec = {
        "alias": alias, "trainer": trainer, "params": parsed, "eval_set": local(eval_set),
        "split": split, "allow_test": allow_test, "metric": metric, "min_gain": min_gain,
        "task": task, "instruction": instruction, "no_instruction": no_instruction,
        "corpus": local(corpus), "format": fmt, "current_encoder": current_encoder,
        "keep_versions": keep_versions,
    }  # fmt: skip
    try:
        job = submit_retrain(settings, spec, wait=embedded)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    _report(settings, job, embedded=embedded, wait=wait, as_json=as_json)


def _require_broker(settings: WorkerSettings, what: str) -> None:
    if not settings.broker_url:
        raise UserError(
            f"{what} needs a Redis broker: set EMBER_BROKER_URL (e.g. redis://localhost:6379/0). "
            "Without one, jobs run in-process (ember jobs index, the API)."
        )


@click.command("worker", context_settings={"ignore_unknown_options": True})
@click.option(
    "--queues",
    "-Q",
    default=None,
    help="Comma-separated queues [env EMBER_WORKER_QUEUES; default index,train].",
)
@click.option(
    "--name",
    "-n",
    default="worker@%h",
    show_default=True,
    help="Node name: unique per worker, stable across its restarts (restart recovery).",
)
@click.option(
    "--pool",
    type=click.Choice(["solo", "prefork", "threads"]),
    default="solo",
    show_default=True,
    help="solo: one process, model loaded once (GPU: one worker per device).",
)
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.option("--beat", "-B", is_flag=True, help="Also run the beat scheduler (one per cluster).")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker_command(
    queues: str | None,
    name: str,
    pool: str,
    concurrency: int,
    loglevel: str,
    beat: bool,
    celery_args: tuple[str, ...],
) -> None:
    """Run a Celery worker for index and training jobs (extra args go to `celery worker`).

    \b
    GPU hosts: one worker per device, e.g.
      CUDA_VISIBLE_DEVICES=0 ember worker -n gpu0@%h
      CUDA_VISIBLE_DEVICES=1 ember worker -n gpu1@%h
    """
    from workers.settings import broker_without_qdrant

    settings = _settings()
    _require_broker(settings, "ember worker")
    warning = broker_without_qdrant(settings)
    if warning is not None:
        click.echo(f"warning: {warning}", err=True)
    from workers.app import app

    queue_list = queues or ",".join(settings.worker_queues)
    argv = [
        "worker",
        f"--pool={pool}",
        f"--concurrency={concurrency}",
        f"--queues={queue_list}",
        f"--hostname={name}",
        f"--loglevel={loglevel}",
        "--prefetch-multiplier=1",
    ]
    if beat:
        argv += ["--beat", f"--schedule={Path(settings.data_dir) / 'celerybeat-schedule'}"]
    app.worker_main(argv + list(celery_args))


@click.command("beat")
@click.option("--loglevel", "-l", default="INFO", show_default=True)
def beat_command(loglevel: str) -> None:
    """Run the beat scheduler for EMBER_RETRAIN_SCHEDULE (run exactly one per deployment)."""
    settings = _settings()
    _require_broker(settings, "ember beat")
    from workers.app import app

    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    schedule = Path(settings.data_dir) / "celerybeat-schedule"
    app.start(["beat", f"--loglevel={loglevel}", f"--schedule={schedule}"])


COMMANDS = [jobs_group, worker_command, beat_command]

"""Index jobs on a real redis-server and real ``ember worker`` processes (solo pool).

The worker owns its embedded store; each test reads it after the worker exits. A job is followed
through its record in Redis, as ``GET /jobs/{id}`` does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.workers.conftest import RedisServer, Worker, wait_until
from tests.workers.helpers import (
    client_settings,
    documents,
    expected_ids,
    simcse_params,
    store_contents,
)
from workers.client import submit_index, submit_train, wait_for
from workers.jobs import Job, open_job_store
from workers.settings import WorkerSettings

JOB_TIMEOUT = 180.0  # generous: a shared 2-core machine; behaviour is asserted, never speed

Start = Callable[..., tuple[Worker, dict[str, str], WorkerSettings]]


@pytest.fixture
def start(worker_env: dict[str, str], spawn_worker: Any, tmp_path: Path) -> Start:
    """``start(redis, name, **env)``: a worker ``name`` on ``redis`` (``env`` on top of
    ``worker_env``), with its environment and a client's settings for that Redis."""

    def run(
        redis: RedisServer, name: str, **extra: str
    ) -> tuple[Worker, dict[str, str], WorkerSettings]:
        env = {**worker_env, "EMBER_BROKER_URL": redis.url, **extra}
        return spawn_worker(name, env), env, client_settings(tmp_path, redis.url)

    return run


def follow(settings: Any, job_id: str) -> Job:
    store = open_job_store(settings)
    try:
        return wait_for(store, job_id, timeout=JOB_TIMEOUT, poll_s=0.2)
    finally:
        store.close()


def current(settings: Any, job_id: str) -> Job:
    store = open_job_store(settings)
    try:
        return store.require(job_id)
    finally:
        store.close()


def in_flight(settings: Any, job_id: str, done_at_least: int) -> int | None:
    """The index of a batch that is running (started, not reported), once enough are done."""
    job = current(settings, job_id)
    if job.batches_done < done_at_least:
        return None
    running = [b.index for b in job.batches.values() if b.state == "running"]
    return running[0] if running else None


def index_until_in_flight(
    settings: WorkerSettings, n: int, done_at_least: int
) -> tuple[list[dict[str, Any]], Job, int]:
    """Submit ``n`` documents to ``docs`` in batches of two and wait until a batch is in flight
    once ``done_at_least`` are done: (the documents, the job, that batch's index)."""
    docs = documents(n)
    job = submit_index(settings, "docs", documents=docs, batch_docs=2)
    batch = wait_until(
        lambda: in_flight(settings, job.id, done_at_least), JOB_TIMEOUT, "a batch in flight"
    )
    return docs, job, batch


def assert_stored(
    env: dict[str, str], docs: list[dict[str, Any]], alias: str = "docs"
) -> tuple[str | None, list[str]]:
    """The workers' store (read once they have exited) holds ``docs`` under ``alias``: one point
    a document, none duplicated (a redelivered batch overwrites its own points), none lost.
    Returns the collection behind ``alias`` and every collection name."""
    collection, count, ids, names = store_contents(Path(env["EMBER_DATA_DIR"]), alias)
    assert count == len(docs) and ids == expected_ids(docs)
    return collection, names


def cli(monkeypatch: pytest.MonkeyPatch, broker_url: str, args: list[str]) -> Any:
    """Run ``ember ARGS`` in-process against ``broker_url`` (the CLI reads EMBER_* settings)."""
    from click.testing import CliRunner

    from ember.cli import cli as ember
    from indexer.settings import clear_settings_cache

    monkeypatch.setenv("EMBER_BROKER_URL", broker_url)
    clear_settings_cache()
    try:
        return CliRunner().invoke(ember, args)
    finally:
        monkeypatch.delenv("EMBER_BROKER_URL")
        clear_settings_cache()


def test_index_and_train_jobs_complete_on_a_worker(
    redis_server: RedisServer, start: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, env, settings = start(redis_server, "w-complete")
    docs = documents(12)
    job = submit_index(settings, "docs", documents=docs, batch_docs=3)
    assert job.state == "queued"
    done = follow(settings, job.id)
    assert done.state == "succeeded", done.to_dict()
    progress = done.to_dict()["progress"]
    assert progress["batches_total"] == progress["batches_done"] == 4
    assert progress["documents_done"] == progress["points"] == 12
    assert progress["rate_docs_per_s"] > 0 and progress["eta_s"] == 0
    assert done.build is not None and done.build.startswith("docs__")

    # a corpus path read by the worker, submitted and followed with the CLI
    corpus = tmp_path / "corpus.jsonl"
    file_docs = documents(5, prefix="file")
    corpus.write_text("".join(json.dumps(d) + "\n" for d in file_docs))
    out = cli(
        monkeypatch, redis_server.url, ["jobs", "index", str(corpus), "-c", "files", "--wait"]
    )
    assert out.exit_code == 0, out.output
    job_id = out.stdout.splitlines()[0]
    assert "state      succeeded" in out.stdout and "documents  5/5, 5 points" in out.stdout
    shown = cli(monkeypatch, redis_server.url, ["jobs", "show", job_id, "--json"])
    assert json.loads(shown.stdout)["progress"]["points"] == 5
    listed = cli(monkeypatch, redis_server.url, ["jobs", "list"]).stdout.splitlines()
    assert [line.split()[0] for line in listed] == [job_id, done.id]

    # training runs in the same pool, on the train queue: a real (tiny) SimCSE run
    params = simcse_params(tmp_path, env["EMBER_ENCODER"])
    trained = follow(settings, submit_train(settings, "simcse", params).id)
    assert trained.state == "succeeded", trained.to_dict()
    assert trained.result["output"] == params["out"]
    assert (Path(params["out"]) / "encoder_config.json").is_file()
    assert (Path(params["out"]) / "adapter").is_dir()
    # a path outside the worker's roots, sent to the broker without the API: refused there
    elsewhere = str(tmp_path.parent / f"{tmp_path.name}-elsewhere")
    escaped = follow(settings, submit_train(settings, "simcse", {**params, "out": elsewhere}).id)
    assert escaped.state == "failed"
    assert escaped.error == "params.out: path must be inside EMBER_JOB_OUTPUT_DIR"
    assert not Path(elsewhere).exists()
    unknown = follow(settings, submit_train(settings, "no-such-trainer").id)
    assert unknown.state == "failed"
    assert unknown.error == (
        "unknown trainer 'no-such-trainer'; available: llara, mntp, simcse, supervised"
    )

    worker.stop()
    collection, _ = assert_stored(env, docs)
    assert collection == done.build
    assert_stored(env, file_docs, "files")


def test_kill9_mid_batch_then_restart_loses_and_duplicates_nothing(
    redis_server: RedisServer, start: Start
) -> None:
    # The visibility timeout stays at its production default (hours): only the restart
    # recovery can bring the killed batch back within the test's deadline.
    worker, env, settings = start(redis_server, "w-kill", EMBER_TEST_BATCH_DELAY_S="1.5")
    # the batch is upserted and sleeping before it reports: kill it there
    docs, job, victim = index_until_in_flight(settings, 16, done_at_least=2)
    worker.kill9()
    assert current(settings, job.id).batches[victim].state == "running"

    worker.start()  # same node name: a restart of the same worker
    done = follow(settings, job.id)
    assert done.state == "succeeded", done.to_dict()
    assert done.batches[victim].attempts == 2  # redelivered once, not lost
    assert all(b.attempts == 1 for i, b in done.batches.items() if i != victim)
    assert done.points == 16
    assert "requeued 1 task(s) that a previous run of w-kill@localhost had started" in worker.log()

    worker.stop()
    assert_stored(env, docs)  # 16 points: nothing duplicated, nothing lost


@pytest.mark.slow  # ~30 s: two worker start-ups plus the timeout
def test_another_worker_takes_over_after_the_visibility_timeout(
    redis_server: RedisServer, start: Start, spawn_worker: Any
) -> None:
    """A worker that never comes back: its batch goes to another node once the visibility
    timeout expires, found by the restore sweep (every unacked_restore_interval s)."""
    first, env, settings = start(
        redis_server,
        "w-first",
        EMBER_TEST_BATCH_DELAY_S="1.0",
        EMBER_VISIBILITY_TIMEOUT="4",  # > the longest batch here (~1 s)
        EMBER_UNACKED_RESTORE_INTERVAL="0.5",
    )
    docs, job, victim = index_until_in_flight(settings, 10, done_at_least=1)
    first.kill9()

    second: Worker = spawn_worker("w-second", env)  # another node: no restart recovery applies
    done = follow(settings, job.id)
    assert done.state == "succeeded", done.to_dict()
    assert done.batches[victim].attempts == 2
    assert "requeued" not in second.log()
    second.stop()
    assert_stored(env, docs)


@pytest.mark.slow  # ~30 s on the shared CI machine
def test_redis_restart_mid_job(redis_aof: RedisServer, start: Start) -> None:
    worker, env, settings = start(redis_aof, "w-redis", EMBER_TEST_BATCH_DELAY_S="1.0")
    docs, job, _ = index_until_in_flight(settings, 12, done_at_least=2)
    redis_aof.restart(down_for=2.0)  # queued batches and the job record survive in the AOF

    done = follow(settings, job.id)
    assert done.state == "succeeded", done.to_dict()
    assert done.points == 12
    assert "Connection to broker lost" in worker.log()  # the worker did see Redis go away
    worker.stop()
    assert_stored(env, docs)


def test_poisoned_document_fails_its_batch_and_keeps_the_served_build(
    redis_server: RedisServer, start: Start
) -> None:
    worker, env, settings = start(redis_server, "w-poison")
    good = documents(9)
    first = follow(settings, submit_index(settings, "docs", documents=good, batch_docs=3).id)
    assert first.state == "succeeded"

    poisoned = documents(9, prefix="new")
    poisoned[4]["metadata"] = {"chunk_index": 7}  # a reserved payload field: the reader rejects it
    job = follow(settings, submit_index(settings, "docs", documents=poisoned, batch_docs=3).id)
    assert job.state == "failed"
    assert (job.batches_done, job.batches_failed) == (2, 1)  # the rest completed
    assert job.errors() == [
        {
            "batch": 1,
            "error": "record 5: document 'new-4': metadata field 'chunk_index' is reserved",
        }
    ]
    assert job.error is not None and "1 of 3 batches failed" in job.error
    assert job.result["deleted_build"] is True

    worker.stop()
    collection, names = assert_stored(env, good)  # intact
    assert collection == first.build  # the alias still serves the first build
    assert job.build not in names

"""Index jobs on a real redis-server and real ``ember worker`` processes (solo pool).

The worker owns its embedded store; each test reads it after the worker exits. A job is followed
through its record in Redis, as ``GET /jobs/{id}`` does.
"""

from __future__ import annotations

import json
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

JOB_TIMEOUT = 180.0  # generous: a shared 2-core machine; behaviour is asserted, never speed


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
    redis_server: RedisServer,
    worker_env: dict[str, str],
    spawn_worker: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {**worker_env, "EMBER_BROKER_URL": redis_server.url}
    worker: Worker = spawn_worker("w-complete", env)
    settings = client_settings(tmp_path, redis_server.url)

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
    data_dir = Path(env["EMBER_DATA_DIR"])
    collection, count, ids, _ = store_contents(data_dir, "docs")
    assert collection == done.build
    assert count == 12 and ids == expected_ids(docs)
    _, count, ids, _ = store_contents(data_dir, "files")
    assert count == 5 and ids == expected_ids(file_docs)


def test_kill9_mid_batch_then_restart_loses_and_duplicates_nothing(
    redis_server: RedisServer,
    worker_env: dict[str, str],
    spawn_worker: Any,
    tmp_path: Path,
) -> None:
    # The visibility timeout stays at its production default (hours): only the restart
    # recovery can bring the killed batch back within the test's deadline.
    env = {**worker_env, "EMBER_BROKER_URL": redis_server.url, "EMBER_TEST_BATCH_DELAY_S": "1.5"}
    worker: Worker = spawn_worker("w-kill", env)
    settings = client_settings(tmp_path, redis_server.url)

    docs = documents(16)
    job = submit_index(settings, "docs", documents=docs, batch_docs=2)
    # the batch is upserted and sleeping before it reports: kill it there
    victim = wait_until(lambda: in_flight(settings, job.id, 2), JOB_TIMEOUT, "a batch in flight")
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
    _, count, ids, _ = store_contents(Path(env["EMBER_DATA_DIR"]), "docs")
    assert count == 16  # nothing duplicated (the redelivered batch overwrote its own points)
    assert ids == expected_ids(docs)  # nothing lost


@pytest.mark.slow  # ~30 s: two worker start-ups plus the timeout
def test_another_worker_takes_over_after_the_visibility_timeout(
    redis_server: RedisServer,
    worker_env: dict[str, str],
    spawn_worker: Any,
    tmp_path: Path,
) -> None:
    """A worker that never comes back: its batch goes to another node once the visibility
    timeout expires, found by the restore sweep (every unacked_restore_interval s)."""
    env = {
        **worker_env,
        "EMBER_BROKER_URL": redis_server.url,
        "EMBER_TEST_BATCH_DELAY_S": "1.0",
        "EMBER_VISIBILITY_TIMEOUT": "4",  # > the longest batch here (~1 s)
        "EMBER_UNACKED_RESTORE_INTERVAL": "0.5",
    }
    first: Worker = spawn_worker("w-first", env)
    settings = client_settings(tmp_path, redis_server.url)
    docs = documents(10)
    job = submit_index(settings, "docs", documents=docs, batch_docs=2)
    victim = wait_until(lambda: in_flight(settings, job.id, 1), JOB_TIMEOUT, "a batch in flight")
    first.kill9()

    second: Worker = spawn_worker("w-second", env)  # another node: no restart recovery applies
    done = follow(settings, job.id)
    assert done.state == "succeeded", done.to_dict()
    assert done.batches[victim].attempts == 2
    assert "requeued" not in second.log()
    second.stop()
    _, count, ids, _ = store_contents(Path(env["EMBER_DATA_DIR"]), "docs")
    assert count == 10 and ids == expected_ids(docs)


@pytest.mark.slow  # ~30 s on the shared CI machine
def test_redis_restart_mid_job(
    redis_aof: RedisServer,
    worker_env: dict[str, str],
    spawn_worker: Any,
    tmp_path: Path,
) -> None:
    env = {**worker_env, "EMBER_BROKER_URL": redis_aof.url, "EMBER_TEST_BATCH_DELAY_S": "1.0"}
    worker: Worker = spawn_worker("w-redis", env)
    settings = client_settings(tmp_path, redis_aof.url)
    docs = documents(12)
    job = submit_index(settings, "docs", documents=docs, batch_docs=2)
    wait_until(lambda: in_flight(settings, job.id, 2), JOB_TIMEOUT, "a batch in flight")
    redis_aof.restart(down_for=2.0)  # queued batches and the job record survive in the AOF

    done = follow(settings, job.id)
    assert done.state == "succeeded", done.to_dict()
    assert done.points == 12
    assert "Connection to broker lost" in worker.log()  # the worker did see Redis go away
    worker.stop()
    _, count, ids, _ = store_contents(Path(env["EMBER_DATA_DIR"]), "docs")
    assert count == 12 and ids == expected_ids(docs)


def test_poisoned_document_fails_its_batch_and_keeps_the_served_build(
    redis_server: RedisServer,
    worker_env: dict[str, str],
    spawn_worker: Any,
    tmp_path: Path,
) -> None:
    env = {**worker_env, "EMBER_BROKER_URL": redis_server.url}
    worker: Worker = spawn_worker("w-poison", env)
    settings = client_settings(tmp_path, redis_server.url)
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
    collection, count, ids, names = store_contents(Path(env["EMBER_DATA_DIR"]), "docs")
    assert collection == first.build  # the alias still serves the first build, intact
    assert count == 9 and ids == expected_ids(good)
    assert job.build not in names

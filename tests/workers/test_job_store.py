"""Job records on both backends: Redis (a real redis-server) and JSON files (embedded)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.workers.conftest import RedisServer
from workers.jobs import FileJobStore, JobNotFoundError, JobStore, RedisJobStore


@pytest.fixture(params=["redis", "file"])
def jobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        store: JobStore = RedisJobStore(server.url)
    else:
        store = FileJobStore(tmp_path / "jobs")
    try:
        yield store
    finally:
        store.close()


def test_create_get_list(jobs: JobStore) -> None:
    first = jobs.create("index", {"collection": "docs", "documents": 3})
    second = jobs.create("train", {"trainer": "simcse"})
    got = jobs.require(first.id)
    assert (got.kind, got.state, got.collection) == ("index", "queued", "docs")
    assert got.params == {"collection": "docs", "documents": 3}
    assert [j.id for j in jobs.list()] == [second.id, first.id]  # newest first
    assert [j.id for j in jobs.list(limit=1)] == [second.id]
    assert jobs.get("0123456789abcdef") is None
    with pytest.raises(JobNotFoundError, match="no job 'missing'"):
        jobs.require("missing")
    with pytest.raises(ValueError, match="unknown job kind"):
        jobs.create("encode", {})


def test_progress_counts_each_batch_once_however_often_it_runs(jobs: JobStore) -> None:
    job = jobs.create("index", {"collection": "docs"})
    jobs.update(job.id, state="running", started_at=1000.0, batches_total=3, documents_total=25)
    assert jobs.batch_started(job.id, 0, 10) == 1
    jobs.batch_done(job.id, 0, 10, 12)
    assert jobs.batch_started(job.id, 1, 10) == 1
    assert jobs.batch_started(job.id, 1, 10) == 2  # redelivered
    jobs.batch_done(job.id, 1, 10, 11)
    jobs.batch_done(job.id, 1, 10, 11)  # reported twice: still one batch
    got = jobs.require(job.id)
    assert (got.batches_done, got.batches_failed, got.points, got.documents_done) == (2, 0, 23, 20)
    assert got.batches[1].attempts == 2 and got.batches[0].attempts == 1
    assert got.rate(now=1010.0) == pytest.approx(2.0)  # 20 docs in 10 s
    assert got.eta_s(now=1010.0) == pytest.approx(2.5)  # 5 docs left at 2 docs/s
    progress = got.to_dict(now=1010.0)["progress"]
    assert progress["percent"] == pytest.approx(66.7)
    assert progress["rate_docs_per_s"] == 2.0 and progress["eta_s"] == 2.5

    jobs.batch_started(job.id, 2, 5)
    jobs.batch_failed(job.id, 2, 5, "record 21: document 'x': 'text' is missing or empty")
    got = jobs.require(job.id)
    assert got.batches_failed == 1 and got.documents_failed == 5
    assert got.errors() == [
        {"batch": 2, "error": "record 21: document 'x': 'text' is missing or empty"}
    ]


def test_finish_happens_once(jobs: JobStore) -> None:
    job = jobs.create("train", {"trainer": "t"})
    assert jobs.finish(job.id, "failed", error="boom") is True
    assert jobs.finish(job.id, "succeeded", result={"output": "/x"}) is False
    got = jobs.require(job.id)
    assert (got.state, got.error, got.result) == ("failed", "boom", {})
    assert got.finished and got.finished_at is not None and got.eta_s() == 0.0
    with pytest.raises(ValueError, match="not a terminal state"):
        jobs.finish(job.id, "running")


def test_only_known_fields_and_states_can_be_set(jobs: JobStore) -> None:
    job = jobs.create("index", {"collection": "docs"})
    with pytest.raises(ValueError, match="job field 'kind' cannot be updated"):
        jobs.update(job.id, kind="train")
    with pytest.raises(ValueError, match="unknown job state 'paused'"):
        jobs.update(job.id, state="paused")


def test_finished_redis_records_expire(redis_server: RedisServer) -> None:
    store = RedisJobStore(redis_server.url)
    try:
        job = store.create("index", {"collection": "docs"})
        store.batch_started(job.id, 0, 1)
        assert store.client.ttl(f"ember:job:{job.id}") == -1  # running: kept
        store.finish(job.id, "succeeded")
        for part in ("", ":batches", ":attempts"):
            assert store.client.ttl(f"ember:job:{job.id}{part}") > 0
    finally:
        store.close()


def test_file_records_are_readable_from_another_instance(tmp_path: Path) -> None:
    writer, reader = FileJobStore(tmp_path), FileJobStore(tmp_path)
    job = writer.create("index", {"collection": "docs"})
    writer.batch_started(job.id, 0, 4)
    assert reader.require(job.id).batches[0].state == "running"
    with pytest.raises(JobNotFoundError):
        reader.require("../etc/passwd")


def _gone_owner() -> dict[str, object]:
    """The owner record of a process that has exited (and been reaped)."""
    import subprocess

    from workers.owner import _stat, current_owner

    proc = subprocess.Popen(["sleep", "30"])
    stat = _stat(proc.pid)
    proc.kill()
    proc.wait()
    here = current_owner()
    assert stat is not None and here is not None
    return {**here, "pid": proc.pid, "start_ticks": stat[1]}


def test_a_job_whose_owner_is_gone_reads_as_failed(jobs: JobStore) -> None:
    from workers.owner import OWNER_DIED, current_owner, owner_alive

    here = current_owner()
    assert here is not None and owner_alive(here) is True
    alive = jobs.create("index", {"collection": "a"}, owner=here)
    dead = jobs.create("index", {"collection": "b"}, owner=_gone_owner())
    reused = jobs.create("index", {"collection": "c"}, owner={**here, "start_ticks": 1})
    elsewhere = jobs.create("index", {"collection": "d"}, owner={**_gone_owner(), "host": "x"})
    unowned = jobs.create("index", {"collection": "e"})  # a Celery job: redelivered, not failed
    for job in (alive, dead, reused, elsewhere, unowned):
        jobs.update(job.id, state="running", started_at=1.0)

    states = {j.id: (j.state, j.error) for j in jobs.list()}
    assert states[alive.id] == ("running", None)
    assert states[dead.id] == ("failed", OWNER_DIED)
    assert states[reused.id] == ("failed", OWNER_DIED)  # same pid, another process
    assert states[elsewhere.id] == ("running", None)  # another host: no verdict
    assert states[unowned.id] == ("running", None)
    settled = jobs.require(dead.id)
    assert settled.finished_at is not None and settled.to_dict()["progress"]["eta_s"] == 0.0
    assert settled.to_dict()["owner"]["pid"] == dead.owner["pid"]  # type: ignore[index]
    # a finished job is never touched again
    jobs.finish(alive.id, "succeeded")
    jobs.update(alive.id, owner=_gone_owner())
    assert jobs.require(alive.id).state == "succeeded"

"""Build records and the stale rule (indexer.builds): which unfinished builds the next build may
delete, and that unfinished builds are never served, listed as complete or kept for rollback."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from indexer import builds
from indexer.pipeline import (
    begin_build,
    chunk_documents,
    finish_build,
    index_chunks,
    index_documents,
    prune_versions,
)
from indexer.readers import Document
from indexer.search import search
from indexer.sparse import SPARSE_VECTOR
from indexer.store import BUILD_META_KEY, BuildIncompleteError, Store, build_complete
from tests.indexer.conftest import BOTH, TOPICS

DOCS = [Document(id=f"d{i}", text=TOPICS[i % len(TOPICS)]) for i in range(10)]


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process on this host that is not this one."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def record(**fields: Any) -> dict[str, Any]:
    return {**builds.owner_record(), **fields}


def test_build_complete_reads_the_record_and_old_collections_count_as_complete() -> None:
    assert build_complete({}) and build_complete(None) and build_complete({"fusion": {}})
    assert build_complete({BUILD_META_KEY: {"complete": True}})
    assert not build_complete({BUILD_META_KEY: {"complete": False}})


def test_stale_rule_on_this_host(sleeper: subprocess.Popen[bytes]) -> None:
    assert builds.stale_reason("c", None) is None
    assert builds.stale_reason("c", record(complete=True, pid=dead_pid())) is None
    gone = builds.stale_reason("c", record(pid=dead_pid(), pid_start=None))
    assert gone is not None and "is gone" in gone
    # another live process on this host is still writing it
    live = record(pid=sleeper.pid, pid_start=builds._start_ticks(sleeper.pid))
    assert builds.stale_reason("c", live) is None
    assert builds.stale_reason("c", {**live, "pid_start": None}) is None
    # the same pid, started at another time: a reused pid, the builder is gone
    assert builds.stale_reason("c", {**live, "pid_start": live["pid_start"] - 1}) is not None
    # a host that restarted since the build started
    assert builds.stale_reason("c", {**live, "boot": "another-boot"}) is not None
    # this process: stale unless it is writing the build now
    assert builds.stale_reason("mine", record()) is not None
    builds.started("mine")
    try:
        assert builds.stale_reason("mine", record()) is None
    finally:
        builds.forget("mine")


def test_a_zombie_builder_is_gone() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    proc.kill()
    deadline = time.monotonic() + 10
    while (stat := builds._proc_stat(proc.pid)) is not None and stat[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        assert not builds.process_alive(proc.pid)
        assert builds.stale_reason("c", record(pid=proc.pid, pid_start=None)) is not None
    finally:
        proc.wait()


def test_stale_rule_for_other_hosts_and_jobs() -> None:
    now = time.time()
    far = record(
        host=f"not-{socket.gethostname()}", pid=1, started_at=now - 600, heartbeat_at=now - 60
    )
    assert builds.stale_reason("c", far, now=now) is None
    assert builds.stale_reason("c", far, now=now + builds.STALE_AFTER_S) is not None
    assert builds.stale_reason("c", far, stale_after_s=30, now=now) is not None
    # a broker job's build: the job decides; without a job check, the heartbeat does
    job = record(job="j1", pid=dead_pid())
    assert builds.stale_reason("c", job, job_alive=lambda j: j == "j1") is None
    assert builds.stale_reason("c", job, job_alive=lambda j: False) is not None
    assert builds.stale_reason("c", job, now=now) is None
    assert builds.stale_reason("c", job, now=now + builds.STALE_AFTER_S + 1) is not None
    # a record without owner or time (hand-made) is stale
    assert builds.stale_reason("c", {"complete": False}) is not None


def unfinished(store: Store, tiny: Any, n: int, owner: dict[str, Any]) -> str:
    name = f"docs__{tiny.fingerprint}__v{n}"
    store.create_collection(name, {"dense": tiny.dim}, meta={BUILD_META_KEY: owner})
    return name


@BOTH
def test_begin_build_deletes_only_builds_whose_builder_is_gone(
    store: Store, tiny: Any, sleeper: subprocess.Popen[bytes]
) -> None:
    served = index_documents(DOCS, "docs", tiny, store, progress=False).collection
    dead = unfinished(store, tiny, 2, record(pid=dead_pid(), pid_start=None))
    live = unfinished(store, tiny, 3, record(pid=sleeper.pid, pid_start=None))
    infos = {i.name: i.complete for i in store.list_collections()}
    assert infos == {served: True, dead: False, live: False}

    new = begin_build(store, "docs", tiny)
    assert new.endswith("__v4")  # numbers of deleted builds are not reused
    names = {i.name for i in store.list_collections()}
    assert names == {served, live, new}
    assert store.get_alias("docs") == served


@BOTH
def test_unfinished_builds_are_not_searched_nor_kept_for_rollback(store: Store, tiny: Any) -> None:
    chunks = list(chunk_documents(DOCS, tiny.tokenizer))
    v1 = index_documents(DOCS, "docs", tiny, store, progress=False).collection
    partial = begin_build(store, "docs", tiny)  # being written by this process: kept
    index_chunks(store, partial, tiny, chunks[:3])
    assert not store.collection_info(partial).complete
    with pytest.raises(BuildIncompleteError, match=partial):
        search(store, tiny, partial, "fox")
    assert search(store, tiny, "docs", "fox")

    v3 = index_documents(DOCS, "docs", tiny, store, progress=False, keep_versions=1).collection
    assert store.get_alias("docs") == v3
    # the partial v2 is not a rollback version: v1 is kept, v2 is left to its (live) builder
    assert {i.name for i in store.list_collections()} == {v1, partial, v3}

    index_chunks(store, partial, tiny, chunks[3:])  # its builder finishes it later: refused
    with pytest.raises(Exception, match="newer build"):
        finish_build(store, "docs", partial, len(chunks))
    assert not store.collection_info(partial).complete and store.get_alias("docs") == v3
    builds.forget(partial)
    assert prune_versions(store, "docs", keep=0) == [v1]


@BOTH
def test_old_collections_without_a_record_stay_searchable(store: Store, tiny: Any) -> None:
    old = f"docs__{tiny.fingerprint}__v1"
    # as built before builds were marked: no record
    store.create_collection(old, {"dense": tiny.dim}, sparse=(SPARSE_VECTOR,))
    chunks = list(chunk_documents(DOCS, tiny.tokenizer))
    index_chunks(store, old, tiny, chunks)
    store.switch_alias("docs", old)
    assert store.collection_info(old).complete
    assert search(store, tiny, old, "fox") and search(store, tiny, "docs", "fox")
    new = index_documents(DOCS, "docs", tiny, store, progress=False, keep_versions=1).collection
    assert {i.name for i in store.list_collections()} == {old, new}  # counted as a version
    assert store.collection_meta(new)[BUILD_META_KEY]["complete"] is True


@BOTH
def test_the_record_is_written_with_the_collection_and_beats(
    store: Store, tiny: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    collection = begin_build(store, "docs", tiny)
    rec = store.collection_meta(collection)[BUILD_META_KEY]
    assert rec["complete"] is False and rec["pid"] == os.getpid()
    assert rec["host"] == socket.gethostname() and "job" not in rec
    store.update_collection_meta(collection, {"fusion": {"method": "rrf"}})  # other keys stay
    monkeypatch.setattr(builds, "HEARTBEAT_S", 0.0)
    builds.heartbeat(store, collection, every_s=0.0)
    after = store.collection_meta(collection)
    assert after[BUILD_META_KEY]["heartbeat_at"] >= rec["heartbeat_at"]
    assert after["fusion"] == {"method": "rrf"}
    builds.forget(collection)


def test_pause_point_writes_the_flag_then_sleeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(builds.time, "sleep", slept.append)
    monkeypatch.setenv(builds.TEST_PAUSE_ENV, "upserted")
    monkeypatch.setenv(builds.TEST_FLAG_ENV, str(tmp_path / "flag"))
    builds.pause_point("batch-1", "c")
    assert not (tmp_path / "flag").exists() and not slept
    builds.pause_point("upserted", "c")
    assert (tmp_path / "flag").read_text() == "c" and slept

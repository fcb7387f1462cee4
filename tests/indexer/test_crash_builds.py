"""``kill -9`` of a real ``ember index`` process at several points of a build, then a re-run.

The killed build must never be served, searched or listed as searchable; the last complete
build keeps serving; the next run deletes the unfinished build (its builder is gone), serves the
new one and keeps ``keep_versions`` finished versions. The killed process's folder lock (qdrant
local mode's portalocker lock, the edge store's fcntl lock) must not block the re-run.

A build stops at a named point through ``EMBER_TEST_BUILD_PAUSE`` (:mod:`indexer.builds`) and
says so by writing its collection name to ``EMBER_TEST_BUILD_FLAG``; the test then kills it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ember.cli import cli
from indexer.builds import TEST_FLAG_ENV, TEST_PAUSE_ENV
from indexer.edge_store import EdgeStore
from indexer.pipeline import chunk_documents, index_documents, parse_version
from indexer.readers import read_corpus
from indexer.search import search
from indexer.store import BuildIncompleteError, QdrantClientStore, Store
from tests.conftest import REPO
from tests.indexer.conftest import corpus_records, write_jsonl

CHUNKING = ["--chunk-tokens", "16", "--overlap", "4", "--batch-size", "4"]
KILL_TIMEOUT_S = 240.0  # a cold torch import on a busy machine

# (backend, point): every point on the edge store, two on qdrant local mode
CASES = [
    ("edge", "batch-1"),  # after the first batch's upsert
    ("edge", "batch-4"),  # mid-way
    ("edge", "upserted"),  # after the last upsert, before the completion mark
    ("edge", "completed"),  # marked complete, killed before the alias switch
    ("local", "batch-4"),
    ("local", "upserted"),
]


def open_data(data: Path, backend: str) -> Store:
    """The store ``ember`` opens for EMBER_DATA_DIR=data (indexer.stores.open_store's layout)."""
    if backend == "local":
        return QdrantClientStore(path=data / "qdrant")
    return EdgeStore(data / "edge")


def killed_build(
    data: Path, backend: str, corpus: Path, encoder: Path, point: str, tmp: Path
) -> str:
    """Run ``ember index`` in a subprocess until it reaches ``point``, ``kill -9`` it and return
    the collection it was building."""
    flag = tmp / f"flag-{point}"
    env = {
        **os.environ,
        "EMBER_DATA_DIR": str(data),
        "EMBER_EMBEDDED_BACKEND": backend,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
        TEST_PAUSE_ENV: point,
        TEST_FLAG_ENV: str(flag),
    }
    args = [sys.executable, "-m", "ember", "index", str(corpus), "-c", "probe", "--encoder",
            str(encoder), "--no-progress", "--keep-versions", "1", *CHUNKING]  # fmt: skip
    proc = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + KILL_TIMEOUT_S
        while not flag.exists():
            if proc.poll() is not None:
                pytest.fail(f"ember index exited ({proc.returncode}) before {point}: "
                            f"{proc.stderr.read().decode() if proc.stderr else ''}")  # fmt: skip
            if time.monotonic() > deadline:
                pytest.fail(f"ember index did not reach {point} in {KILL_TIMEOUT_S:.0f}s")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return flag.read_text()


def cli_run(args: list[str], data: Path, backend: str) -> Any:
    env = {"EMBER_DATA_DIR": str(data), "EMBER_EMBEDDED_BACKEND": backend}
    return CliRunner().invoke(cli, args, env=env, catch_exceptions=False)


@pytest.mark.parametrize(("backend", "point"), CASES)
def test_kill_9_mid_build_then_rerun(
    backend: str, point: str, tiny: Any, tiny_folder: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    corpus = write_jsonl(tmp_path / "c.jsonl", corpus_records(24))
    docs = list(read_corpus(corpus))
    total = len(list(chunk_documents(docs, tiny.tokenizer, 16, 4)))
    assert total >= 4 * 6, total  # enough batches of 4 for the mid-way point

    # two complete builds: v2 served, v1 kept for rollback (keep_versions=1)
    with open_data(data, backend) as store:
        for _ in range(2):
            served = index_documents(
                docs, "probe", tiny, store, chunk_tokens=16, overlap=4, batch_size=4,
                progress=False, keep_versions=1,
            ).collection  # fmt: skip
    v1 = served.replace("__v2", "__v1")

    partial = killed_build(data, backend, corpus, tiny_folder, point, tmp_path)
    assert parse_version(partial) == ("probe", tiny.fingerprint, 3)
    finished = point == "completed"  # marked complete, never switched in

    # the killed process's lock is gone: the store opens; v2 still serves; v3 is not searchable
    with open_data(data, backend) as store:
        infos = {i.name: i for i in store.list_collections()}
        assert set(infos) == {v1, served, partial}
        assert store.get_alias("probe") == served
        assert infos[partial].complete is finished and infos[partial].aliases == []
        assert infos[partial].points <= total
        if point == "batch-1":
            assert infos[partial].points == 4
        hits = search(store, tiny, "probe", "vitamin D deficiency", top_k=3)
        assert hits and store.count(served) == total
        if not finished:
            with pytest.raises(BuildIncompleteError, match=partial):
                search(store, tiny, partial, "vitamin D deficiency")

    listed = cli_run(["collections", "--json"], data, backend)
    assert listed.exit_code == 0, listed.stderr
    complete = {c["name"]: c["complete"] for c in json.loads(listed.stdout)}
    assert complete == {v1: True, served: True, partial: finished}
    if not finished:
        res = cli_run(
            ["search", "fox", "-c", partial, "--encoder", str(tiny_folder)], data, backend
        )
        assert res.exit_code != 0 and "has not finished" in res.stderr and partial in res.stderr

    # the next run: the unfinished build goes, the new one serves, one finished version is kept
    res = cli_run(["index", str(corpus), "-c", "probe", "--encoder", str(tiny_folder),
                   "--no-progress", "--keep-versions", "1", *CHUNKING], data, backend)  # fmt: skip
    assert res.exit_code == 0, res.stderr
    new = partial.replace("__v3", "__v4")
    with open_data(data, backend) as store:
        infos = {i.name: i for i in store.list_collections()}
        rollback = partial if finished else served
        assert set(infos) == {rollback, new}
        assert all(i.complete for i in infos.values())
        assert store.get_alias("probe") == new and store.count(new) == total
        assert search(store, tiny, "probe", "vitamin D deficiency", top_k=3)

"""In-process jobs whose process dies: a real ``kill -9`` of a process running an embedded index
job, then the records read from this process (job store, ``ember jobs``, the API), and the same
job submitted again. And ``ember jobs index`` on a store another process holds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from indexer.settings import clear_settings_cache
from indexer.stores import open_store
from search_api.app import create_app
from tests.conftest import REPO
from tests.search_api.conftest import make_settings, wait_ready
from tests.workers.conftest import stop_process, wait_until
from tests.workers.helpers import documents
from workers import runtime, tasks
from workers.jobs import FileJobStore, Job
from workers.owner import OWNER_DIED

RUN_JOB = """
import json, sys
from workers.settings import get_worker_settings
from workers.client import submit_index
docs = json.loads(sys.argv[1])
submit_index(get_worker_settings(), "docs", documents=docs, batch_docs=1, wait=True)
"""


@pytest.fixture
def env(tmp_path: Path, tiny_model: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBER_")}
    env.update(
        EMBER_ENCODER=str(tiny_model), EMBER_DATA_DIR=str(tmp_path / "data"),
        EMBER_SEARCH_MODE="dense", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
        OMP_NUM_THREADS="1", PYTHONPATH=str(REPO),
    )  # fmt: skip
    return env


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Iterator[None]:
    for key in [k for k in os.environ if k.startswith("EMBER_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("EMBER_"):
            monkeypatch.setenv(key, value)
    clear_settings_cache()
    try:
        yield
    finally:
        clear_settings_cache()
        runtime.reset()
        tasks._job_stores.clear()


def running_job(jobs: FileJobStore) -> Job | None:
    found = jobs.list()
    return found[0] if found and found[0].batches_done >= 1 else None


def test_kill9_of_the_owner_fails_the_job_and_it_can_be_resubmitted(
    tmp_path: Path, env: dict[str, str], cli_env: None, tiny_model: Path
) -> None:
    from ember.cli import cli

    docs = documents(6)
    job_env = {**env, tasks.TEST_DELAY_ENV: "1.5"}  # each batch takes >= 1.5 s
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_JOB, json.dumps(docs)], cwd=REPO, env=job_env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    jobs = FileJobStore(tmp_path / "data" / "jobs")
    try:
        job = wait_until(lambda: running_job(jobs), 120, "a batch of the in-process job", 0.1)
        assert job.state == "running" and job.owner and job.owner["pid"] == proc.pid
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        stop_process(proc)

    dead = jobs.require(job.id)  # read from this process: the owner is gone
    assert (dead.state, dead.error) == ("failed", OWNER_DIED)
    assert 1 <= dead.batches_done < 6 and dead.to_dict()["progress"]["eta_s"] == 0.0

    runner = CliRunner()
    listed = runner.invoke(cli, ["jobs", "list"])
    assert listed.exit_code == 0 and f"{job.id}  index  failed" in listed.output, listed.output
    shown = runner.invoke(cli, ["jobs", "show", job.id])
    assert shown.exit_code == 1 and "reason     owner died" in shown.output, shown.output

    settings = make_settings(tmp_path / "data", encoder=str(tiny_model))
    store = open_store(settings)  # the dead owner's lock on the folder went with it
    try:
        with TestClient(create_app(settings, store=store)) as client:
            wait_ready(client, 120)
            body = client.get(f"/jobs/{job.id}").json()
            assert (body["state"], body["error"]) == ("failed", OWNER_DIED)
            assert body["owner"]["pid"] == proc.pid
            assert client.get("/jobs").json()["jobs"][0]["state"] == "failed"
            # the same job again: a new job (ids are never reused) on a new build
            again = client.post("/jobs/index", json={"collection": "docs", "documents": docs})
            assert again.status_code == 202, again.text
            new_id = again.json()["id"]
            assert new_id != job.id
            done = wait_until(
                lambda: (b := client.get(f"/jobs/{new_id}").json())["state"] in ("succeeded",
                                                                                   "failed") and b,
                120, "the resubmitted job",
            )  # fmt: skip
            assert done["state"] == "succeeded", done
            assert done["progress"]["points"] == 6 and done["build"] != dead.build
            assert done["owner"]["pid"] == os.getpid()
            assert store.get_alias("docs") == done["build"] and store.count("docs") == 6
    finally:
        store.close()


def test_jobs_index_on_a_locked_store_is_one_line_and_leaves_no_record(
    tmp_path: Path, cli_env: None, env: dict[str, str]
) -> None:
    from ember.cli import cli

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in documents(3)))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from indexer.stores import open_store; "
         "s = open_store(); print('locked', flush=True); sys.stdin.read()"],
        cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        out = CliRunner().invoke(cli, ["jobs", "index", str(corpus), "-c", "docs"])
    finally:
        stop_process(holder)  # type: ignore[arg-type]
    assert out.exit_code == 1
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: embedded store "), out.output
    assert "is locked by another process" in lines[0]
    assert FileJobStore(Path(env["EMBER_DATA_DIR"]) / "jobs").list() == []

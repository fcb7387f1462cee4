"""The retrain pipeline as a Celery chain on a real redis-server and ``ember worker``: a worker
killed (``kill -9``) during the train, evaluate or reindex stage leaves the alias on its old
complete build; the restarted worker runs the interrupted stage again from the job record and
only then moves the alias."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.workers import retrain_helpers as rh
from tests.workers.conftest import RedisServer, Worker, wait_until
from tests.workers.helpers import client_settings, expected_ids, store_contents
from tests.workers.test_worker_process import JOB_TIMEOUT, current, follow, in_flight
from workers.client import submit_index, submit_retrain
from workers.jobs import Job
from workers.retrain_spec import STAGES
from workers.settings import WorkerSettings


class Served(NamedTuple):
    """``docs`` indexed with the bad encoder by a worker still running: what a test goes on with."""

    good: Path
    worker: Worker
    settings: WorkerSettings
    env: dict[str, str]
    docs: list[dict[str, Any]]
    first: Job


def serve_with_bad_encoder(
    redis_server: RedisServer,
    worker_env: dict[str, str],
    spawn_worker: Any,
    tmp_path: Path,
    tiny_model: Path,
    name: str,
    **extra_env: str,
) -> Served:
    """Start worker ``name`` serving the bad encoder (the test trainer module loaded,
    ``extra_env`` on top) and index the corpus into ``docs`` through it."""
    good, bad = rh.encoders(tmp_path, tiny_model)
    env = {
        **worker_env,
        "EMBER_BROKER_URL": redis_server.url,
        "EMBER_ENCODER": str(bad),
        "EMBER_TRAINER_MODULES": json.dumps([rh.TRAINER_MODULE]),
        **extra_env,
    }
    worker: Worker = spawn_worker(name, env)
    settings = client_settings(tmp_path, redis_server.url)
    path, docs = rh.corpus(tmp_path)
    first = follow(settings, submit_index(settings, "docs", path=str(path)).id)
    assert first.state == "succeeded", first.to_dict()
    return Served(good, worker, settings, env, docs, first)


def test_kill9_during_reindex_keeps_the_old_build_served(
    redis_server: RedisServer,
    worker_env: dict[str, str],
    spawn_worker: Any,
    tmp_path: Path,
    tiny_model: Path,
) -> None:
    good, worker, settings, env, docs, first = serve_with_bad_encoder(
        redis_server, worker_env, spawn_worker, tmp_path, tiny_model, "w-retrain",
        EMBER_JOB_BATCH_DOCS="4", EMBER_TEST_BATCH_DELAY_S="1.5",
    )  # fmt: skip

    job = submit_retrain(settings, rh.retrain_spec("docs", good, rh.eval_set(tmp_path)))
    # the rebuild's batches are the retrain job's progress; kill the worker mid-batch
    wait_until(lambda: in_flight(settings, job.id, 1), JOB_TIMEOUT, "a rebuild batch in flight")
    worker.kill9()
    killed = current(settings, job.id)
    assert killed.state == "running" and killed.result["stages"]["reindex"]["state"] == "running"
    assert killed.result["decision"] == "promote"
    served, count, ids, _ = store_contents(Path(env["EMBER_DATA_DIR"]), "docs")
    assert served == first.build and count == len(docs) and ids == expected_ids(docs)

    worker.start()  # same node: its unfinished batch is requeued, the rebuild goes on
    done = follow(settings, job.id)
    assert done.state == "succeeded", done.to_dict()
    assert done.result["decision"] == "promoted"
    assert [done.result["stages"][s]["state"] for s in STAGES] == ["done"] * 4
    assert done.to_dict()["progress"]["points"] == len(docs)
    worker.stop()
    served, count, ids, _ = store_contents(Path(env["EMBER_DATA_DIR"]), "docs")
    assert served == done.build != first.build
    assert count == len(docs) and ids == expected_ids(docs)


def _stage_running(settings: Any, job_id: str, stage: str) -> bool:
    job: Job = current(settings, job_id)
    return job.result.get("stages", {}).get(stage, {}).get("state") == "running"


def _mid_stage(settings: Any, job_id: str, stage: str) -> bool:
    """The stage is running, and for training the trainer has written its partial folder (the
    stage turns running before the trainer starts: killing then would find no candidate)."""
    if not _stage_running(settings, job_id, stage):
        return False
    if stage != "train":
        return True
    output = current(settings, job_id).result["stages"]["train"].get("output")
    return bool(output) and (Path(output) / "partial").is_file()


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_kill9_during_train_or_evaluate_resumes_and_promotes_once(
    redis_server: RedisServer,
    worker_env: dict[str, str],
    spawn_worker: Any,
    tmp_path: Path,
    tiny_model: Path,
    stage: str,
) -> None:
    delay = {"EMBER_TEST_EVALUATE_DELAY_S": "4"} if stage == "evaluate" else {}
    good, worker, settings, env, docs, first = serve_with_bad_encoder(
        redis_server, worker_env, spawn_worker, tmp_path, tiny_model, f"w-retrain-{stage}",
        **delay,
    )  # fmt: skip

    spec = rh.retrain_spec("docs", good, rh.eval_set(tmp_path))
    if stage == "train":
        spec["params"]["delay_s"] = 4  # a partial output folder exists while it sleeps
    job = submit_retrain(settings, spec)
    wait_until(lambda: _mid_stage(settings, job.id, stage), JOB_TIMEOUT, f"{stage} running")
    worker.kill9()
    killed = current(settings, job.id)
    assert killed.state == "running", killed.to_dict()
    assert killed.result["stages"][stage]["state"] == "running"
    assert killed.result["decision"] is None  # nothing decided yet
    served, count, ids, _ = store_contents(Path(env["EMBER_DATA_DIR"]), "docs")
    assert served == first.build and count == len(docs) and ids == expected_ids(docs)
    if stage == "train":
        out = Path(killed.result["stages"]["train"]["output"])
        assert (out / "partial").is_file()  # the killed run's half-written candidate

    worker.start()  # same node name: the interrupted stage's message goes back to its queue
    done = follow(settings, job.id)
    assert done.state == "succeeded", done.to_dict()
    assert done.result["decision"] == "promoted"
    assert [done.result["stages"][s]["state"] for s in STAGES] == ["done"] * 4
    worker.stop()
    out = Path(done.result["stages"]["train"]["output"])
    assert not (out / "partial").exists() and (out / "trained_from.json").is_file()
    served, count, ids, _ = store_contents(Path(env["EMBER_DATA_DIR"]), "docs")
    assert served == done.build != first.build
    assert count == len(docs) and ids == expected_ids(docs)

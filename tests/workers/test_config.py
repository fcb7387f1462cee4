"""The Celery configuration, the beat schedule, the trainer registry and the import boundary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from workers import training
from workers.app import build_beat_schedule, celery_config, create_app, parse_cron
from workers.recovery import _task_id
from workers.settings import WorkerSettings


def broker_settings(**overrides: Any) -> WorkerSettings:
    return WorkerSettings(broker_url="redis://127.0.0.1:1/0", **overrides)


def test_delivery_settings_on_a_broker() -> None:
    conf = celery_config(broker_settings(visibility_timeout=7200, unacked_restore_interval=3))
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["task_track_started"] is True  # restart recovery reads the node name from it
    options = conf["broker_transport_options"]
    assert options["visibility_timeout"] == 7200
    assert options["unacked_restore_interval"] == 3
    assert options["unacked_restore_throttle"] == 1  # else only every 10th sweep scans Redis
    assert conf["result_backend"] == "redis://127.0.0.1:1/0"
    assert "task_always_eager" not in conf


def test_tasks_are_routed_to_the_index_and_train_queues() -> None:
    app = create_app(broker_settings())
    assert app.amqp.router.route({}, "ember.train")["queue"].name == "train"
    for name in ("ember.index", "ember.index_batch", "ember.finish_index", "ember.index_failed"):
        assert app.amqp.router.route({}, name)["queue"].name == "index"


def test_without_a_broker_tasks_run_in_process() -> None:
    conf = celery_config(WorkerSettings(broker_url=None))
    assert conf["task_always_eager"] is True
    assert conf["broker_url"] == "memory://"


def test_beat_schedule_is_built_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    schedule = [
        {"name": "weekly-simcse", "cron": "0 3 * * 0", "trainer": "simcse", "params": {"e": 1}},
        {"cron": "30 */6 * * *", "trainer": "mntp"},
    ]
    monkeypatch.setenv("EMBER_RETRAIN_SCHEDULE", json.dumps(schedule))
    monkeypatch.setenv("EMBER_BROKER_URL", "redis://127.0.0.1:1/0")
    beat = create_app(WorkerSettings()).conf.beat_schedule
    assert sorted(beat) == ["retrain-mntp-1", "weekly-simcse"]
    weekly = beat["weekly-simcse"]
    assert weekly["task"] == "ember.train"
    assert weekly["options"] == {"queue": "train"}
    assert weekly["kwargs"] == {
        "trainer": "simcse",
        "params": {"e": 1},
        "scheduled": "weekly-simcse",
    }
    cron = weekly["schedule"]
    assert (cron.minute, cron.hour, cron.day_of_week) == ({0}, {3}, {0})
    every6 = beat["retrain-mntp-1"]["schedule"]
    assert every6.minute == {30} and every6.hour == {0, 6, 12, 18}
    assert beat["retrain-mntp-1"]["kwargs"]["params"] == {}


def test_no_schedule_means_no_beat_entries() -> None:
    assert build_beat_schedule(WorkerSettings()) == {}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"cron": "0 3 * *", "trainer": "x"}, "expected 5 fields"),
        ({"cron": "61 3 * * *", "trainer": "x"}, "cron '61 3 * * *'"),
        ({"cron": "0 3 * * *"}, "'trainer' must be a trainer name"),
        ({"trainer": "x"}, "'cron' must be a crontab string"),
        ({"cron": "0 3 * * *", "trainer": "x", "every": 1}, "unknown field 'every'"),
        ({"cron": "0 3 * * *", "trainer": "x", "params": [1]}, "'params' must be an object"),
    ],
)
def test_bad_schedule_entries_are_named(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match="EMBER_RETRAIN_SCHEDULE\\[0\\]") as info:
        build_beat_schedule(WorkerSettings(retrain_schedule=[entry]))
    assert message in str(info.value)


def test_duplicate_schedule_names_are_refused() -> None:
    entries = [{"name": "a", "cron": "0 3 * * *", "trainer": "x"}] * 2
    with pytest.raises(ValueError, match="duplicate schedule name 'a'"):
        build_beat_schedule(WorkerSettings(retrain_schedule=entries))


def test_parse_cron_fields() -> None:
    cron = parse_cron("15 2 1 */3 *")
    assert cron.minute == {15} and cron.hour == {2} and cron.day_of_month == {1}
    assert cron.month_of_year == {1, 4, 7, 10}


# ---- trainer registry ---------------------------------------------------------------------------
@pytest.fixture
def clean_registry() -> Any:
    before = training.available()
    yield
    for name in training.available():
        if name not in before:
            training.unregister_trainer(name)


def test_unknown_trainer_lists_the_available_ones(clean_registry: Any) -> None:
    with pytest.raises(training.UnknownTrainerError) as info:
        training.get_trainer("nope")
    assert str(info.value).startswith("unknown trainer 'nope'; available: ")
    training.register_trainer("alpha", lambda params: params["out"])
    training.register_trainer("beta", lambda params: params["out"])
    with pytest.raises(training.UnknownTrainerError, match="available: alpha, beta"):
        training.get_trainer("nope")


def test_trainer_modules_register_their_trainers(clean_registry: Any, tmp_path: Path) -> None:
    assert training.load_all_trainers() == ["mntp", "simcse", "supervised", "llara"]
    assert {"mntp", "simcse", "supervised", "llara"} <= set(training.available())
    training.register_trainer("echo-folder", lambda params: params["out"], replace=True)
    assert training.run_trainer("echo-folder", {"out": str(tmp_path)}) == tmp_path


def test_bad_trainer_modules_and_results_are_errors(clean_registry: Any, tmp_path: Path) -> None:
    with pytest.raises(training.TrainerError, match=r"cannot import 'no\.such\.module'"):
        training.load_trainer_modules(["no.such.module"])
    with pytest.raises(training.TrainerError, match="'json' has no TRAINERS mapping"):
        training.load_trainer_modules(["json"])
    training.register_trainer("returns-int", lambda params: 3)  # type: ignore[arg-type,return-value]
    with pytest.raises(training.TrainerError, match="returned int, expected a folder path"):
        training.run_trainer("returns-int", {})
    training.register_trainer("returns-missing", lambda params: tmp_path / "missing")
    with pytest.raises(training.TrainerError, match="which is not a folder"):
        training.run_trainer("returns-missing", {})
    with pytest.raises(ValueError, match="already registered"):
        training.register_trainer("returns-missing", lambda params: tmp_path)


# ---- boundaries ---------------------------------------------------------------------------------
def test_the_api_side_does_not_import_worker_task_code() -> None:
    """``search_api.routes.jobs`` and the client modules load no tasks, encoders or torch."""
    code = (
        "import sys, workers.app, workers.client, workers.jobs\n"
        "heavy = [m for m in ('workers.tasks', 'encoders.encoder', 'encoders.registry', 'torch', "
        "'transformers') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "import search_api.routes.jobs\n"
        "assert 'workers.tasks' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_unacked_entries_are_parsed_for_their_task_id() -> None:
    payload = {"headers": {"id": "abc", "task": "ember.index_batch"}, "body": ""}
    assert _task_id(json.dumps([payload, "index", "index"])) == "abc"
    assert _task_id("not json") is None
    assert _task_id(json.dumps([{"headers": {}}, "", ""])) is None


# ---- worker device ------------------------------------------------------------------------------
def test_worker_device_resolution_on_a_cpu_machine() -> None:
    """No GPU here: ``auto`` picks the CPU and asking for CUDA is a clear error. (The GPU path,
    moving the model with ``.to("cuda")``, is not exercised by this suite.)"""
    import torch

    from workers.runtime import resolve_device

    assert resolve_device("cpu") == "cpu"
    if torch.cuda.is_available():  # pragma: no cover - a GPU machine
        assert resolve_device("auto") == "cuda"
        return
    assert resolve_device("auto") == "cpu"
    with pytest.raises(RuntimeError, match="EMBER_WORKER_DEVICE=cuda:1: torch sees no CUDA"):
        resolve_device("cuda:1")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")

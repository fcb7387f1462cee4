"""Job path confinement (``workers.paths``): the roots, symlinks, NUL, and the worker-side check
of jobs that come through the broker (a task run by a worker, not ``Task.apply``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from workers import runtime, tasks
from workers.jobs import open_job_store
from workers.paths import JobPathError, confine_input, confine_train_params
from workers.settings import WorkerSettings


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(inputs, outputs, outside): a file and a folder outside, links to them inside."""
    inputs, outputs, outside = tmp_path / "in", tmp_path / "out", tmp_path / "outside"
    for folder in (inputs, outputs, outside):
        folder.mkdir()
    (inputs / "texts.jsonl").write_text('{"text": "a"}\n')
    (outside / "secret.txt").write_text("secret\n")
    (inputs / "escape.txt").symlink_to(outside / "secret.txt")
    (inputs / "escape-dir").symlink_to(outside, target_is_directory=True)
    (outputs / "escape-dir").symlink_to(outside, target_is_directory=True)
    return inputs, outputs, outside


@pytest.fixture
def settings(tmp_path: Path, roots: tuple[Path, Path, Path]) -> WorkerSettings:
    inputs, outputs, _ = roots
    return WorkerSettings(
        broker_url=None, data_dir=tmp_path / "data", job_input_dir=inputs, job_output_dir=outputs
    )


def refused(call: object, *args: object) -> tuple[str, str]:
    with pytest.raises(JobPathError) as info:
        call(*args)  # type: ignore[operator]
    return ".".join(map(str, info.value.loc)), info.value.reason


def test_inputs_stay_inside_the_input_root(
    settings: WorkerSettings, roots: tuple[Path, Path, Path]
) -> None:
    inputs, _, outside = roots
    assert confine_input(settings, "texts.jsonl", ("path",)) == str(inputs / "texts.jsonl")
    assert confine_input(settings, str(inputs / "texts.jsonl"), ("path",)) == str(
        inputs / "texts.jsonl"
    )
    assert confine_input(settings, ".", ("path",)) == str(inputs)  # the whole root is a corpus
    for raw in ("/etc/passwd", "../outside/secret.txt", str(outside / "secret.txt")):
        assert refused(confine_input, settings, raw, ("path",)) == (
            "path", "path must be inside EMBER_JOB_INPUT_DIR",
        )  # fmt: skip
    # resolved after symlinks: a link inside the root pointing out of it is refused
    for raw in ("escape.txt", "escape-dir/secret.txt", "escape-dir"):
        assert refused(confine_input, settings, raw, ("path",))[1] == (
            "path must be inside EMBER_JOB_INPUT_DIR"
        )
    assert refused(confine_input, settings, "texts.jsonl\x00.txt", ("path",)) == (
        "path", "path must not contain NUL characters",
    )  # fmt: skip
    assert refused(confine_input, settings, "missing.jsonl", ("path",)) == (
        "path", "no such file or folder: 'missing.jsonl'",
    )  # fmt: skip
    assert refused(confine_input, settings, "bad\ud800name", ("path",))[1].startswith(
        "unusable path"
    )
    unset = settings.model_copy(update={"job_input_dir": None})
    assert refused(confine_input, unset, "texts.jsonl", ("path",)) == (
        "path", "job paths are disabled on this server (set EMBER_JOB_INPUT_DIR)",
    )  # fmt: skip


def test_training_params_are_confined_field_by_field(
    settings: WorkerSettings, roots: tuple[Path, Path, Path]
) -> None:
    inputs, outputs, outside = roots
    ok = {"from": "minilm", "out": "trained", "data": ["texts.jsonl"], "max_steps": 1}
    checked = confine_train_params(settings, ok)
    assert checked == {**ok, "out": str(outputs / "trained"), "data": [str(inputs / "texts.jsonl")]}
    assert ok["out"] == "trained"  # the caller's dict is not changed
    # the repro: /etc/passwd as data, any folder as out
    assert refused(confine_train_params, settings, {**ok, "data": ["/etc/passwd"]}) == (
        "params.data.0", "path must be inside EMBER_JOB_INPUT_DIR",
    )  # fmt: skip
    assert refused(confine_train_params, settings, {**ok, "out": str(outside / "x")}) == (
        "params.out", "path must be inside EMBER_JOB_OUTPUT_DIR",
    )  # fmt: skip
    cases = {
        "params.out": [{"out": "escape-dir/x"}, {"out": "."}, {"out": "a\x00b"}, {"out": 3}],
        "params.data.1": [{"data": ["texts.jsonl", "escape.txt"]}],
        "params.data": [{"data": {"a": 1}}],
        "params.corpus_pairs.0": [{"corpus_pairs": ["/etc/passwd"]}],
        "params.scored_pairs": [{"scored_pairs": "/etc/passwd"}],
        # ``from`` that is not a preset is a folder: an input (or an earlier job's output)
        "params.from": [{"from": str(outside)}, {"from": "no-such-encoder"}],
        "params.from_encoder": [{"from_encoder": "/etc"}],
    }
    for loc, overrides in cases.items():
        for override in overrides:
            assert refused(confine_train_params, settings, {**ok, **override})[0] == loc, override
    (outputs / "earlier").mkdir()
    assert confine_train_params(settings, {**ok, "from": str(outputs / "earlier")})["from"] == (
        str(outputs / "earlier")
    )
    served = settings.model_copy(update={"encoder": str(outside)})  # the server's own encoder
    assert confine_train_params(served, {**ok, "from": str(outside)})["from"] == str(outside)


def test_the_output_root_defaults_to_the_data_dir(tmp_path: Path) -> None:
    s = WorkerSettings(data_dir=tmp_path / "data")
    out = confine_train_params(s, {"out": "run-1"})["out"]
    assert out == str((tmp_path / "data" / "jobs-out" / "run-1").resolve())
    assert refused(confine_train_params, s, {"out": str(tmp_path / "data" / "x")})[0] == (
        "params.out"
    )


@pytest.fixture
def worker(settings: WorkerSettings) -> Iterator[WorkerSettings]:
    """This process acting as a worker with ``settings`` (tasks called as a worker calls
    them, so ``request.is_eager`` is false: the job came through the broker)."""
    runtime.provide(settings=settings)
    try:
        yield settings
    finally:
        runtime.reset()
        tasks._job_stores.clear()


def test_the_worker_refuses_paths_from_the_broker(
    worker: WorkerSettings, roots: tuple[Path, Path, Path]
) -> None:
    _, _, outside = roots
    job_store = open_job_store(worker)
    try:
        params = {"from": "minilm", "out": str(outside / "x"), "data": ["texts.jsonl"]}
        train = job_store.create("train", {"trainer": "simcse", "params": params})
        with pytest.raises(JobPathError):
            tasks.train(job_id=train.id, trainer="simcse", params=params)
        failed = job_store.require(train.id)
        assert failed.state == "failed"
        assert failed.error == "params.out: path must be inside EMBER_JOB_OUTPUT_DIR"
        assert not (outside / "x").exists()

        spec = {"collection": "docs", "path": "/etc/passwd", "format": "auto"}
        index = job_store.create("index", {"collection": "docs", "path": "/etc/passwd"})
        with pytest.raises(JobPathError):
            tasks.index(index.id, spec)
        failed = job_store.require(index.id)
        assert failed.state == "failed" and failed.build is None
        assert failed.error == "path: path must be inside EMBER_JOB_INPUT_DIR"
    finally:
        job_store.close()

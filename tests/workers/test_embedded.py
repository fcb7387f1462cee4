"""Embedded mode: no broker, the same tasks run in this process (``Task.apply``)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from indexer.builds import owner_record
from indexer.settings import clear_settings_cache
from indexer.store import BUILD_META_KEY
from tests.workers.helpers import contents, documents, expected_ids, simcse_params
from workers import runtime, tasks
from workers.client import submit_index, submit_train, wait_for
from workers.jobs import FileJobStore, open_job_store
from workers.settings import WorkerSettings


@pytest.fixture
def settings(tmp_path: Path, tiny_model: Path) -> Iterator[WorkerSettings]:
    s = WorkerSettings(broker_url=None, data_dir=tmp_path / "data", encoder=str(tiny_model))
    try:
        yield s
    finally:  # release the embedded store this process opened
        runtime.reset()
        tasks._job_stores.clear()


def served(settings: WorkerSettings, alias: str) -> tuple[str | None, int, set[str], list[str]]:
    return contents(runtime.get_store(), alias)


def test_index_job_runs_in_process_without_a_broker(settings: WorkerSettings) -> None:
    docs = documents(10)
    job = submit_index(settings, "docs", documents=docs, batch_docs=3, wait=True)
    assert job.state == "succeeded", job.to_dict()
    assert (job.batches_total, job.batches_done, job.points) == (4, 4, 10)
    assert all(b.attempts == 1 for b in job.batches.values())
    assert isinstance(open_job_store(settings), FileJobStore)
    assert (Path(settings.data_dir) / "jobs" / f"{job.id}.json").is_file()
    collection, count, ids, _ = served(settings, "docs")
    assert collection == job.build and count == 10 and ids == expected_ids(docs)

    # a rebuild goes to a new version and the alias moves; the older one is kept for rollback
    again = submit_index(settings, "docs", documents=docs[:4], batch_docs=3, wait=True)
    assert again.state == "succeeded" and again.build != job.build
    collection, count, _, names = served(settings, "docs")
    assert (collection, count) == (again.build, 4)
    assert job.build in names


def test_background_submission_is_queued_then_runs(settings: WorkerSettings) -> None:
    job = submit_index(settings, "docs", documents=documents(5), wait=False)
    done = wait_for(open_job_store(settings), job.id, timeout=120, poll_s=0.1)
    assert done.state == "succeeded" and done.points == 5


def test_poisoned_document_fails_its_batch_only(settings: WorkerSettings) -> None:
    first = submit_index(settings, "docs", documents=documents(6), batch_docs=2, wait=True)
    poisoned = documents(6, prefix="p")
    poisoned[3]["text"] = "   \n  "
    job = submit_index(settings, "docs", documents=poisoned, batch_docs=2, wait=True)
    assert job.state == "failed"
    assert (job.batches_done, job.batches_failed) == (2, 1)
    assert job.errors() == [
        {"batch": 1, "error": "record 4: document 'p-3': 'text' is missing or empty"}
    ]
    collection, count, _, names = served(settings, "docs")
    assert (collection, count) == (first.build, 6)  # still serving the good build
    assert job.build not in names  # the partial build was dropped


def test_bad_corpus_record_fails_the_job_before_any_build(
    settings: WorkerSettings, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus.jsonl"
    lines = [json.dumps(d) for d in documents(3)]
    lines.insert(1, '{"id": "broken", "text": ')
    corpus.write_text("\n".join(lines) + "\n")
    job = submit_index(settings, "docs", path=str(corpus), wait=True)
    assert job.state == "failed"
    assert job.error is not None and job.error.startswith(f"{corpus}:2: invalid JSON")
    assert job.build is None
    assert served(settings, "docs")[3] == []

    skipped = submit_index(settings, "docs", path=str(corpus), on_error="skip", wait=True)
    assert skipped.state == "succeeded" and skipped.points == 3
    assert len(skipped.skipped) == 1 and skipped.skipped[0].startswith(f"{corpus}:2:")


def test_missing_corpus_and_bad_arguments(settings: WorkerSettings, tmp_path: Path) -> None:
    job = submit_index(settings, "docs", path=str(tmp_path / "nope.jsonl"), wait=True)
    assert (
        job.state == "failed" and job.error == f"{tmp_path / 'nope.jsonl'}: no such file or folder"
    )
    with pytest.raises(ValueError, match="exactly one of path or documents"):
        submit_index(settings, "docs")
    with pytest.raises(ValueError, match="'__' is reserved"):
        submit_index(settings, "a__b", documents=documents(1))
    with pytest.raises(ValueError, match="invalid collection name"):
        submit_index(settings, "bad name", documents=documents(1))


def test_duplicate_ids_in_one_job_fail_the_count_check(settings: WorkerSettings) -> None:
    docs = documents(4)
    docs[3]["id"] = docs[0]["id"]
    job = submit_index(settings, "docs", documents=docs, batch_docs=2, wait=True)
    assert job.state == "failed"
    assert job.error is not None and "holds 3 points, expected 4" in job.error
    assert served(settings, "docs")[0] is None


def test_training_jobs_in_process(settings: WorkerSettings, tmp_path: Path) -> None:
    params = simcse_params(tmp_path, settings.encoder)
    job = submit_train(settings, "simcse", params, wait=True)
    assert job.state == "succeeded", job.to_dict()
    assert job.result == {"output": params["out"]}
    assert (Path(params["out"]) / "encoder_config.json").is_file()
    bad = submit_train(settings, "simcse", {**params, "max_stepz": 1}, wait=True)
    assert bad.state == "failed"
    assert bad.error is not None and bad.error.startswith("simcse params: max_stepz:")
    unknown = submit_train(settings, "sim-cse", wait=True)
    assert unknown.state == "failed"
    assert unknown.error == "unknown trainer 'sim-cse'; available: llara, mntp, simcse, supervised"


def test_an_interrupted_training_job_resumes_when_redelivered(
    settings: WorkerSettings, tmp_path: Path
) -> None:
    from workers.app import app, load_tasks

    params = simcse_params(tmp_path, settings.encoder)
    assert submit_train(settings, "simcse", params, wait=True).state == "succeeded"
    fresh = submit_train(settings, "simcse", params, wait=True)  # same output folder
    assert fresh.state == "failed"
    assert fresh.error is not None and "pass --resume to continue it" in fresh.error

    job_store = open_job_store(settings)
    job = job_store.create("train", {"trainer": "simcse", "params": params})
    job_store.update(job.id, state="running", started_at=1.0)  # a delivery that was cut short
    load_tasks(app)
    app.tasks["ember.train"].apply(kwargs={"job_id": job.id, "trainer": "simcse", "params": params})
    assert job_store.require(job.id).state == "succeeded"


def test_cli_jobs_index_list_show(
    settings: WorkerSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: Path
) -> None:
    from ember.cli import cli

    monkeypatch.setenv("EMBER_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("EMBER_ENCODER", str(tiny_model))
    monkeypatch.delenv("EMBER_BROKER_URL", raising=False)
    clear_settings_cache()
    try:
        corpus = tmp_path / "c.jsonl"
        corpus.write_text("".join(json.dumps(d) + "\n" for d in documents(5)))
        runner = CliRunner()
        out = runner.invoke(cli, ["jobs", "index", str(corpus), "-c", "docs", "--batch-docs", "2"])
        assert out.exit_code == 0, out.output
        assert "state      succeeded" in out.output
        assert "batches    3/3 done, 0 failed" in out.output
        listed = runner.invoke(cli, ["jobs", "list"])
        assert (
            listed.exit_code == 0 and "succeeded" in listed.output and "docs 3/3" in listed.output
        )
        job_id = listed.output.split()[0]
        shown = runner.invoke(cli, ["jobs", "show", job_id, "--json"])
        assert shown.exit_code == 0
        assert json.loads(shown.output)["progress"]["points"] == 5
        missing = runner.invoke(cli, ["jobs", "show", "nope"])
        assert missing.exit_code == 1 and "no job 'nope'" in missing.output
        worker = runner.invoke(cli, ["worker"])
        assert worker.exit_code == 1 and "needs a Redis broker" in worker.output
    finally:
        clear_settings_cache()


def test_inline_documents_over_the_size_limit_fail_their_batch(settings: WorkerSettings) -> None:
    small = settings.model_copy(update={"max_doc_chars": 20})
    docs = [{"id": "ok", "text": "short"}, {"id": "huge", "text": "x" * 21}]
    job = submit_index(small, "docs", documents=docs, wait=True)
    assert job.state == "failed"
    errors = [b.error for b in job.batches.values() if b.error]
    assert errors == [
        "record 2: document 'huge': 21 characters, more than the limit of 20 (EMBER_MAX_DOC_CHARS)"
    ]


def test_index_jobs_get_what_the_cli_gets(settings: WorkerSettings) -> None:
    """One IndexSpec on every path: a job honours keep_versions, creates the payload indexes it
    names and refuses chunks longer than the encoder reads before anything is written."""
    docs = [{**d, "year": 2000 + i} for i, d in enumerate(documents(6))]
    builds = []
    for _ in range(3):
        job = submit_index(
            settings, "docs", documents=docs, keep_versions=0,
            payload_indexes={"year": "integer"}, wait=True,
        )  # fmt: skip
        assert job.state == "succeeded", job.to_dict()
        builds.append(job.build)
    _, _, _, names = served(settings, "docs")
    assert [n for n in names if n.startswith("docs__")] == [builds[-1]]  # keep_versions=0
    shard = runtime.get_store()._shard(builds[-1])  # type: ignore[attr-defined]
    assert set(shard.info().payload_schema) == {"doc_id", "source", "year"}

    limit = runtime.get_encoder(None).config.max_length
    job = submit_index(settings, "other", documents=docs, chunk_tokens=limit + 1, wait=True)
    assert job.state == "failed" and "more than the encoder reads" in (job.error or "")
    assert not any(n.startswith("other__") for n in served(settings, "other")[3])

    with pytest.raises(ValueError, match="payload_indexes: payload index 'year': unknown type"):
        submit_index(settings, "docs", documents=docs, payload_indexes={"year": "number"})
    with pytest.raises(ValueError, match="overlap must be smaller than chunk_tokens"):
        submit_index(settings, "docs", documents=docs, chunk_tokens=8, overlap=8)


def test_an_index_job_deletes_unfinished_builds_whose_builder_or_job_is_gone(
    settings: WorkerSettings,
) -> None:
    docs = documents(6)
    first = submit_index(settings, "docs", documents=docs, batch_docs=3, wait=True)
    assert first.state == "succeeded"
    store, encoder = runtime.get_store(), runtime.get_encoder(None)
    running = tasks.jobs().create("index", {"collection": "docs"})
    finished = tasks.jobs().create("index", {"collection": "docs"})
    tasks.jobs().finish(finished.id, "failed", error="gone")
    dead = subprocess.Popen(["true"])
    dead.wait()
    owners = {
        2: owner_record() | {"pid": dead.pid, "pid_start": None},  # a killed CLI run
        3: owner_record(job=finished.id),  # a broker job that stopped
        4: owner_record(job=running.id),  # a broker job still running elsewhere
    }
    names = {}
    for n, owner in owners.items():
        names[n] = f"docs__{encoder.fingerprint}__v{n}"
        store.create_collection(names[n], {"dense": encoder.dim}, meta={BUILD_META_KEY: owner})

    again = submit_index(settings, "docs", documents=docs, batch_docs=3, wait=True)
    assert again.state == "succeeded" and again.build.endswith("__v5")
    collection, count, _, listed = served(settings, "docs")
    assert (collection, count) == (again.build, 6)
    assert listed == sorted([first.build, names[4], again.build])

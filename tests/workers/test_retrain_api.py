"""``POST /jobs/retrain`` (embedded: the job runs in the API process) and ``ember jobs retrain``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from encoders import load_encoder
from indexer.store import QdrantClientStore
from search_api.app import create_app
from tests.search_api.conftest import make_settings, wait_ready
from tests.workers import retrain_helpers as rh
from tests.workers.test_jobs_api import follow
from workers import runtime, tasks
from workers.training import unregister_trainer


@pytest.fixture(autouse=True)
def _forget_test_trainer() -> Iterator[None]:
    """The fixture trainer joins the process-wide registry; other tests list the built-ins."""
    yield
    unregister_trainer(rh.TRAINER_NAME)


def test_retrain_route_promotes_and_shows_every_stage(
    tmp_path: Path, tiny_model: Path, store: QdrantClientStore
) -> None:
    good, bad = rh.encoders(tmp_path, tiny_model)
    rh.eval_set(tmp_path)
    rh.corpus(tmp_path)
    settings = make_settings(
        tmp_path / "data", encoder=str(bad), job_input_dir=tmp_path,
        trainer_modules=[rh.TRAINER_MODULE],
    )  # fmt: skip
    app = create_app(settings, encoder=load_encoder(str(bad)), store=store)
    with TestClient(app) as client:
        wait_ready(client)
        indexed = follow(client, client.post("/jobs/index", json={
            "collection": "docs", "path": "corpus.jsonl"}).json()["id"])  # fmt: skip
        assert indexed["state"] == "succeeded", indexed

        def refused(body: dict[str, Any]) -> str:
            spec = {**rh.retrain_spec("docs", good, Path("eval-set")), **body}
            r = client.post("/jobs/retrain", json=spec)
            assert r.status_code == 422, r.text
            return str(r.json())

        assert "split 'test'" in refused({"split": "test"})
        assert "EMBER_JOB_INPUT_DIR" in refused({"eval_set": "/etc"})
        assert "params.from" in refused({"params": {"from": str(good)}})
        assert "min_gain" in refused({"min_gain": -1})

        r = client.post("/jobs/retrain", json=rh.retrain_spec("docs", good, Path("eval-set")))
        assert r.status_code == 202, r.text
        assert r.json()["kind"] == "retrain" and r.json()["collection"] == "docs"
        done = follow(client, r.json()["id"])
        assert done["state"] == "succeeded", done
        result = done["result"]
        assert result["decision"] == "promoted"
        assert {s: e["state"] for s, e in result["stages"].items()} == {
            "train": "done", "evaluate": "done", "reindex": "done", "promote": "done",
        }  # fmt: skip
        assert result["scores"]["candidate"] > result["scores"]["current"]
        assert result["stages"]["evaluate"]["eval_set"] == str((tmp_path / "eval-set").resolve())
        assert store.get_alias("docs") == done["build"] != indexed["build"]
        assert done["progress"]["points"] == store.count("docs") == rh.N_DOCS
        # the API follows the promotion, no restart: the candidate's build, by the candidate
        r = client.post("/search", json={"query": "x", "collection": "docs", "mode": "dense"})
        assert r.status_code == 200, r.text
        assert r.json()["collection"] == done["build"]
        assert (
            r.json()["fingerprint"]
            == done["build"].split("__")[1]
            != indexed["build"].split("__")[1]
        )


def test_cli_retrain_rejects_a_worse_candidate(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ember.cli import cli
    from indexer.settings import clear_settings_cache

    good, bad = rh.encoders(tmp_path, tiny_model)
    path, _ = rh.corpus(tmp_path)
    evals = rh.eval_set(tmp_path)
    monkeypatch.delenv("EMBER_BROKER_URL", raising=False)
    monkeypatch.setenv("EMBER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EMBER_ENCODER", str(good))
    monkeypatch.setenv("EMBER_TRAINER_MODULES", json.dumps([rh.TRAINER_MODULE]))
    clear_settings_cache()
    try:
        runner = CliRunner()
        out = runner.invoke(cli, ["jobs", "index", str(path), "-c", "docs"])
        assert out.exit_code == 0, out.output
        args = [
            "jobs",
            "retrain",
            "docs",
            "--trainer",
            "copy-encoder",
            "--params",
            json.dumps({"source": str(bad)}),
            "--eval-set",
            str(evals),
            "--no-instruction",
        ]
        out = runner.invoke(cli, args)  # fmt: skip
        assert out.exit_code == 0, out.output
        assert "decision   rejected: candidate ndcg@10" in out.stdout
        assert "stage      reindex   skipped" in out.stdout
        assert "scores     ndcg@10: current 1.0000" in out.stdout
        refused = runner.invoke(cli, [*args, "--split", "test"])
        assert refused.exit_code != 0 and "split 'test'" in refused.output
    finally:
        runtime.reset()
        tasks._job_stores.clear()
        clear_settings_cache()

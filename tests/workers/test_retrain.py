"""The retrain pipeline in-process (embedded, no broker): train -> evaluate -> reindex -> promote.

The trainer is a fixture (``tests.workers.retrain_trainers``) that copies a known encoder, so the
candidate is better or worse by construction (:mod:`tests.workers.retrain_helpers`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from encoders import load_encoder
from indexer.pipeline import index_corpus, parse_version, point_id
from indexer.sources import read_source
from tests.workers import retrain_helpers as rh
from workers import runtime, tasks
from workers.app import build_beat_schedule
from workers.client import submit_index, submit_retrain
from workers.retrain_spec import STAGES, parse_spec
from workers.settings import WorkerSettings
from workers.training import unregister_trainer


@pytest.fixture(autouse=True)
def _forget_test_trainer() -> Iterator[None]:
    """The fixture trainer joins the process-wide registry; other tests list the built-ins."""
    yield
    unregister_trainer(rh.TRAINER_NAME)


def make_settings(tmp: Path, encoder: Path) -> WorkerSettings:
    return WorkerSettings(
        broker_url=None, data_dir=tmp / "data", encoder=str(encoder),
        trainer_modules=[rh.TRAINER_MODULE], job_output_dir=tmp / "out",
    )  # fmt: skip


@dataclass(frozen=True)
class Case:
    """A retrain test's two encoders (``good`` scores above ``bad`` on the eval set, by
    construction) and its corpus (the file ``path`` and its ``docs``), all in ``tmp``."""

    tmp: Path
    good: Path
    bad: Path
    path: Path
    docs: list[dict[str, Any]]

    def settings(self, encoder: Path) -> WorkerSettings:
        """Embedded settings (no broker) with ``encoder`` as EMBER_ENCODER."""
        return make_settings(self.tmp, encoder)

    def recorded_corpus(self) -> dict[str, str]:
        """The corpus that a build indexed from ``path`` records in its source."""
        return {"path": str(self.path.resolve()), "format": "auto", "on_error": "fail"}


@pytest.fixture
def case(tmp_path: Path, tiny_model: Path) -> Case:
    good, bad = rh.encoders(tmp_path, tiny_model)
    return Case(tmp_path, good, bad, *rh.corpus(tmp_path))


@pytest.fixture
def cleanup() -> Iterator[None]:
    try:
        yield
    finally:  # release the embedded store this process opened
        runtime.reset()
        tasks._job_stores.clear()


def top_hit(alias: str, encoder_dir: Path, text: str) -> str:
    store = runtime.get_store()
    encoder = load_encoder(str(encoder_dir))
    vector = encoder.encode_queries([text], instruction=None)[0]
    return str(store.search(alias, vector, top_k=1)[0].payload["doc_id"])


def test_a_better_candidate_is_promoted(case: Case, cleanup: None) -> None:
    settings = case.settings(case.bad)  # the alias is served by the bad encoder
    first = submit_index(settings, "docs", path=str(case.path), batch_docs=5, wait=True)
    assert first.state == "succeeded", first.to_dict()
    store = runtime.get_store()
    record = read_source(store, str(first.build))  # builds record their encoder and corpus
    assert record["encoder"]["spec"] == str(case.bad.resolve())
    assert record["corpus"] == case.recorded_corpus()

    spec = rh.retrain_spec("docs", case.good, rh.eval_set(case.tmp))
    job = submit_retrain(settings, spec, wait=True)
    data = job.to_dict()
    assert job.state == "succeeded", data
    result = job.result
    assert result["decision"] == "promoted", result
    assert [result["stages"][s]["state"] for s in STAGES] == ["done"] * 4
    scores = result["scores"]
    assert scores["candidate"] > scores["current"] + 0.005
    assert scores["gain"] == pytest.approx(scores["candidate"] - scores["current"])
    assert "candidate ndcg@10" in result["reason"] and ">= min_gain 0.005" in result["reason"]
    assert result["current"]["build"] == first.build
    # trained from the encoder serving the alias, into the job's own output folder
    out = Path(result["stages"]["train"]["output"])
    assert out == case.tmp / "out" / "retrain" / job.id
    assert json.loads((out / "trained_from.json").read_text()) == {"from": str(case.bad.resolve())}

    # the alias moved to a new complete build made with the candidate; it answers from it
    build = store.get_alias("docs")
    assert build is not None
    assert build == job.build == result["build"] != first.build
    assert parse_version(build) == ("docs", load_encoder(str(out)).fingerprint, 2)
    assert store.count(build) == len(case.docs)
    assert read_source(store, build)["encoder"]["spec"] == str(out)
    assert data["progress"]["batches_done"] == data["progress"]["batches_total"] >= 1
    assert data["progress"]["points"] == len(case.docs)
    for i in (0, 7):
        assert top_hit("docs", out, case.docs[i]["text"]) == f"d{i}"
    ids = {h.id for h in store.search("docs", load_encoder(str(out)).encode(["x"])[0], top_k=50)}
    assert ids == {point_id(d["id"], 0) for d in case.docs}
    assert first.build in [c.name for c in store.list_collections()]  # kept for rollback


def test_b_a_worse_candidate_is_rejected_and_nothing_moves(case: Case, cleanup: None) -> None:
    settings = case.settings(case.good)
    first = submit_index(settings, "docs", path=str(case.path), wait=True)
    store = runtime.get_store()
    before = sorted(c.name for c in store.list_collections())

    job = submit_retrain(
        settings, rh.retrain_spec("docs", case.bad, rh.eval_set(case.tmp)), wait=True
    )
    assert job.state == "succeeded", job.to_dict()
    result = job.result
    assert result["decision"] == "rejected"
    assert result["scores"]["current"] == pytest.approx(1.0)
    assert result["scores"]["candidate"] < result["scores"]["current"]
    assert "nothing moved" in result["reason"]
    assert result["stages"]["evaluate"]["current"]["ndcg@10"] == result["scores"]["current"]
    assert [result["stages"][s]["state"] for s in STAGES] == ["done", "done", "skipped", "skipped"]
    assert store.get_alias("docs") == first.build and job.build is None
    assert sorted(c.name for c in store.list_collections()) == before
    assert store.count("docs") == len(case.docs)


def test_a_build_without_a_corpus_fails_the_retrain_and_keeps_the_alias(
    case: Case, cleanup: None
) -> None:
    settings = case.settings(case.bad)
    runtime.provide(settings=settings)
    store = runtime.get_store()
    # index_corpus without encoder_spec records no source (as builds made before sources were
    # recorded): the fingerprint finds EMBER_ENCODER, but the corpus must be given
    report = index_corpus(case.path, "docs", load_encoder(str(case.bad)), store, progress=False)
    evals = rh.eval_set(case.tmp)
    job = submit_retrain(settings, rh.retrain_spec("docs", case.good, evals), wait=True)
    assert job.state == "failed"  # found before any training
    assert job.error is not None and job.error.startswith("train: build docs__")
    assert "give corpus" in job.error
    states = [job.result["stages"][s]["state"] for s in STAGES]
    assert states == ["failed", "skipped", "skipped", "skipped"]
    assert store.get_alias("docs") == report.collection

    again = submit_retrain(
        settings, rh.retrain_spec("docs", case.good, evals, corpus=str(case.path)), wait=True
    )
    assert again.result["current"]["encoder"] == str(case.bad)  # EMBER_ENCODER: its fingerprint
    assert again.state == "succeeded" and again.result["decision"] == "promoted", again.result
    assert store.get_alias("docs") == again.build and store.count("docs") == len(case.docs)


def test_spec_rules() -> None:
    base = {"alias": "docs", "trainer": "t", "eval_set": "e"}
    assert parse_spec(base).split == "train" and parse_spec(base).min_gain == 0.005
    with pytest.raises(ValueError, match="split 'test'"):
        parse_spec({**base, "split": "test"})
    assert parse_spec({**base, "split": "test", "allow_test": True}).split == "test"
    with pytest.raises(ValueError, match=r"params\.from: the retrain pipeline trains from"):
        parse_spec({**base, "params": {"from": "x"}})
    with pytest.raises(ValueError, match="alias"):
        parse_spec({**base, "alias": "a__b"})
    with pytest.raises(ValueError, match="nope"):
        parse_spec({**base, "nope": 1})


def test_beat_runs_the_retrain_pipeline_and_old_entries_stay_valid() -> None:
    entries: list[dict[str, Any]] = [
        {"name": "old", "cron": "0 3 * * 0", "trainer": "simcse", "params": {"max_steps": 2}},
        {"name": "loop", "cron": "0 4 * * 0", "pipeline": "retrain", "alias": "docs",
         "trainer": "supervised", "eval_set": "/data/eval", "min_gain": 0.01},
    ]  # fmt: skip
    beat = build_beat_schedule(WorkerSettings(retrain_schedule=entries))
    assert beat["old"]["task"] == "ember.train"
    assert beat["loop"]["task"] == "ember.retrain"
    assert beat["loop"]["options"] == {"queue": "train"}
    spec = beat["loop"]["kwargs"]["spec"]
    assert (spec["alias"], spec["min_gain"], spec["split"]) == ("docs", 0.01, "train")
    assert beat["loop"]["kwargs"]["scheduled"] == "loop"
    bad = {**entries[1], "split": "test"}
    with pytest.raises(ValueError, match=r"EMBER_RETRAIN_SCHEDULE\[0\]: split 'test'"):
        build_beat_schedule(WorkerSettings(retrain_schedule=[bad]))
    with pytest.raises(ValueError, match="unknown field 'alias'"):
        build_beat_schedule(WorkerSettings(retrain_schedule=[{**entries[0], "alias": "docs"}]))


def test_a_build_made_by_ember_index_is_retrained_from_its_recorded_corpus(
    case: Case, cleanup: None
) -> None:
    """`ember index` records the build's source (encoder spec, corpus path, chunking), so a
    retrain of its alias needs neither corpus nor current_encoder."""
    from click.testing import CliRunner

    from ember.cli import cli

    settings = case.settings(case.good)  # EMBER_ENCODER is NOT the encoder it was built with
    res = CliRunner().invoke(cli, [
        "index", str(case.path), "-c", "docs", "--data-dir", str(settings.data_dir), "--encoder",
        str(case.bad), "--chunk-tokens", "64", "--overlap", "8", "--no-progress",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    runtime.provide(settings=settings)
    store = runtime.get_store()
    built = str(store.get_alias("docs"))
    source = read_source(store, built)
    assert source["encoder"]["spec"] == str(case.bad.resolve())
    assert source["corpus"] == case.recorded_corpus()
    assert source["chunking"] == {"chunk_tokens": 64, "overlap": 8} and source["job"] is None

    job = submit_retrain(
        settings, rh.retrain_spec("docs", case.good, rh.eval_set(case.tmp)), wait=True
    )
    assert job.state == "succeeded" and job.result["decision"] == "promoted", job.result
    assert job.result["current"]["encoder"] == str(case.bad.resolve())  # from the record
    assert job.result["current"]["corpus"]["chunk_tokens"] == 64  # rebuilt chunked the same way
    assert store.get_alias("docs") == job.build != built and store.count("docs") == len(case.docs)

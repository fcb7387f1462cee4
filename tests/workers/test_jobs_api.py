"""The job routes (``search_api.routes.jobs``): embedded jobs in the API process, and with a
broker, jobs queued by task name for the workers. Fuzzed against their OpenAPI spec."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis import GenerationMode

from indexer.pipeline import point_id
from indexer.store import QdrantClientStore
from search_api.app import create_app
from tests.search_api.conftest import LiveServer, fuzz, make_settings, wait_ready
from tests.workers.conftest import RedisServer
from tests.workers.helpers import documents, simcse_params

KEY = "jobs-key"


@pytest.fixture(scope="module")
def encoder(tiny_model: Path) -> Any:
    from encoders import load_encoder

    return load_encoder(str(tiny_model))


def follow(client: TestClient, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if body["state"] in ("succeeded", "failed"):
            return body
        assert time.monotonic() < deadline, f"job still {body['state']}"
        time.sleep(0.05)


def test_embedded_jobs_run_in_the_api_process(
    tmp_path: Path, encoder: Any, store: QdrantClientStore
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "c.jsonl").write_text("".join(json.dumps(d) + "\n" for d in documents(4, "f")))
    settings_ = make_settings(tmp_path / "data", job_input_dir=inputs)
    with TestClient(create_app(settings_, encoder=encoder, store=store)) as client:
        wait_ready(client)
        docs = documents(7)
        response = client.post("/jobs/index", json={"collection": "docs", "documents": docs,
                                                    "batch_docs": 3})  # fmt: skip
        assert response.status_code == 202, response.text
        job = response.json()
        assert response.headers["location"] == f"/jobs/{job['id']}"
        assert job["kind"] == "index" and job["collection"] == "docs"
        done = follow(client, job["id"])
        assert done["state"] == "succeeded", done
        assert done["progress"]["batches_done"] == 3 and done["progress"]["points"] == 7
        # the job ran on the API's own encoder and store: the build carries its fingerprint,
        # and the served store finds the new points at once
        assert done["build"] == f"docs__{encoder.fingerprint}__v1"
        assert store.get_alias("docs") == done["build"] and store.count("docs") == 7
        hits = client.post("/search", json={"query": docs[2]["text"], "collection": "docs",
                                            "top_k": 7}).json()  # fmt: skip
        assert {h["id"] for h in hits["hits"]} == {point_id(d["id"], 0) for d in docs}

        by_path = client.post("/jobs/index", json={"collection": "files", "path": "c.jsonl"})
        assert by_path.status_code == 202, by_path.text
        assert follow(client, by_path.json()["id"])["progress"]["points"] == 4

        listed = client.get("/jobs", params={"limit": 5}).json()["jobs"]
        assert [j["id"] for j in listed] == [by_path.json()["id"], job["id"]]

        train = client.post("/jobs/train", json={"trainer": "nope", "params": {"a": 1}})
        assert train.status_code == 202
        failed = follow(client, train.json()["id"])
        assert failed["state"] == "failed"
        assert failed["error"].startswith("unknown trainer 'nope'; available:")


def test_job_requests_are_validated(tmp_path: Path, encoder: Any, store: QdrantClientStore) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (tmp_path / "secret.jsonl").write_text("{}\n")
    with TestClient(create_app(make_settings(tmp_path / "data", job_input_dir=inputs),
                               encoder=encoder, store=store)) as client:  # fmt: skip
        wait_ready(client)

        def error(body: dict[str, Any]) -> tuple[int, list[str]]:
            raw = json.dumps(body)  # ASCII: lone surrogates travel as JSON escapes
            r = client.post(
                "/jobs/index", content=raw, headers={"content-type": "application/json"}
            )
            detail = r.json()["detail"]
            locs = (
                [".".join(map(str, d["loc"])) for d in detail] if isinstance(detail, list) else []
            )
            return r.status_code, locs

        assert error({"collection": "docs"}) == (422, ["body"])
        assert error({"collection": "docs", "path": "x", "documents": [{}]}) == (422, ["body"])
        assert error({"collection": "a__b", "documents": [{}]}) == (422, ["body.collection"])
        assert error({"collection": "docs", "documents": []}) == (422, ["body.documents"])
        assert error({"collection": "docs", "path": "../secret.jsonl"}) == (422, ["body.path"])
        assert error({"collection": "docs", "path": "missing.jsonl"}) == (422, ["body.path"])
        # NUL (once a 500): refused before the file system sees it
        assert error({"collection": "docs", "path": "tiny.jsonl\u0000.txt"}) == (
            422, ["body.path"],
        )  # fmt: skip
        assert error({"collection": "docs", "path": "tiny\ud800.jsonl"}) == (422, ["body.path"])
        docs = [{"id": "a", "text": "\ud800"}]
        assert error({"collection": "docs", "documents": docs}) == (422, ["body.documents"])
        assert error({"collection": "docs", "documents": [{}], "batch_docs": 0}) == (
            422, ["body.batch_docs"],
        )  # fmt: skip
        assert (
            error({"collection": "d", "documents": [{}], "chunk_tokens": 8, "overlap": 8})[0] == 422
        )
        assert error({"collection": "d", "documents": [{}], "extra": 1}) == (422, ["body.extra"])
        assert client.get("/jobs/0123abcd").status_code == 404
        assert client.get("/jobs/bad.id").status_code == 422
        assert client.post("/jobs/train", json={"trainer": ""}).status_code == 422


def test_job_paths_are_confined_to_the_job_roots(
    tmp_path: Path, encoder: Any, store: QdrantClientStore, tiny_model: Path
) -> None:
    inputs, outside = tmp_path / "inputs", tmp_path / "outside"
    inputs.mkdir()
    outside.mkdir()
    (inputs / "texts.jsonl").write_text(
        "".join(json.dumps({"text": d["text"]}) + "\n" for d in documents(16, "t"))
    )
    (inputs / "c.jsonl").write_text("".join(json.dumps(d) + "\n" for d in documents(2, "c")))
    (outside / "c.jsonl").write_text("".join(json.dumps(d) + "\n" for d in documents(2, "x")))
    (inputs / "link.jsonl").symlink_to(outside / "c.jsonl")
    settings_ = make_settings(tmp_path / "data", job_input_dir=inputs, encoder=str(tiny_model))
    outputs = tmp_path / "data" / "jobs-out"
    with TestClient(create_app(settings_, encoder=encoder, store=store)) as client:
        wait_ready(client)

        def refused(body: dict[str, Any], route: str = "/jobs/train") -> list[str]:
            r = client.post(route, json=body)
            assert r.status_code == 422, r.text
            return [".".join(map(str, d["loc"])) for d in r.json()["detail"]]

        # the repro: /etc/passwd as training data, an arbitrary output folder
        repro = {"from": "minilm", "out": str(outside / "any"), "data": ["/etc/passwd"],
                 "data_format": "lines", "max_steps": 1, "batch_size": 2, "max_examples": 8,
                 "target_modules": ["query", "value"], "progress": False, "threads": 1}  # fmt: skip
        assert refused({"trainer": "simcse", "params": repro}) == ["body.params.data.0"]
        repro["data"] = ["texts.jsonl"]
        assert refused({"trainer": "simcse", "params": repro}) == ["body.params.out"]
        assert not (outside / "any").exists()
        params = {**repro, "out": "trained"}
        for bad in ({"data": ["link.jsonl"]}, {"data": ["texts.jsonl\u0000.txt"]}):
            assert refused({"trainer": "simcse", "params": {**params, **bad}}) == [
                "body.params.data.0"
            ]
        assert refused({"trainer": "simcse", "params": {**params, "from": str(outside)}}) == [
            "body.params.from"
        ]
        index = "/jobs/index"
        assert refused({"collection": "d", "path": "link.jsonl"}, index) == ["body.path"]
        assert refused({"collection": "d", "path": "c.jsonl\u0000.txt"}, index) == ["body.path"]
        assert refused({"collection": "d", "path": str(outside / "c.jsonl")}, index) == [
            "body.path"
        ]

        # paths inside the roots work: a real (tiny) SimCSE run writes under the output root
        params = {**simcse_params(tmp_path, str(tiny_model)), "data": ["texts.jsonl"],
                  "out": "trained"}  # fmt: skip
        r = client.post("/jobs/train", json={"trainer": "simcse", "params": params})
        assert r.status_code == 202, r.text
        assert r.json()["params"]["params"]["out"] == str(outputs.resolve() / "trained")
        done = follow(client, r.json()["id"])
        assert done["state"] == "succeeded", done
        assert (outputs / "trained" / "encoder_config.json").is_file()
        r = client.post(index, json={"collection": "files", "path": "c.jsonl"})
        assert r.status_code == 202, r.text
        assert follow(client, r.json()["id"])["progress"]["points"] == 2


def test_path_jobs_are_refused_without_an_input_dir(
    tmp_path: Path, encoder: Any, store: QdrantClientStore
) -> None:
    with TestClient(create_app(make_settings(tmp_path), encoder=encoder, store=store)) as client:
        wait_ready(client)
        r = client.post("/jobs/index", json={"collection": "docs", "path": "/etc/passwd"})
        assert r.status_code == 422
        assert "EMBER_JOB_INPUT_DIR" in r.json()["message"]


def test_with_a_broker_jobs_are_queued_by_task_name(
    tmp_path: Path, encoder: Any, store: QdrantClientStore, redis_server: RedisServer
) -> None:
    import redis

    settings_ = make_settings(tmp_path, broker_url=redis_server.url, api_keys=[KEY])
    auth = {"Authorization": f"Bearer {KEY}"}
    with TestClient(create_app(settings_, encoder=encoder, store=store)) as client:
        assert client.post("/jobs/index", json={}).status_code == 401  # behind the API keys
        r = client.post("/jobs/index", json={"collection": "docs", "documents": documents(3)},
                        headers=auth)  # fmt: skip
        assert r.status_code == 202 and r.json()["state"] == "queued"
        job_id = r.json()["id"]
        t = client.post("/jobs/train", json={"trainer": "simcse"}, headers=auth)
        assert t.status_code == 202
        assert client.get(f"/jobs/{job_id}", headers=auth).json()["state"] == "queued"

    broker = redis.Redis.from_url(redis_server.url)
    (index_message,) = [json.loads(m) for m in broker.lrange("index", 0, -1)]
    assert index_message["headers"]["task"] == "ember.index"
    assert index_message["headers"]["id"] == job_id  # the planner's task id is the job id
    (train_message,) = [json.loads(m) for m in broker.lrange("train", 0, -1)]
    assert train_message["headers"]["task"] == "ember.train"
    assert broker.exists(f"ember:job:{job_id}") == 1


# ---- the spec, fuzzed ---------------------------------------------------------------------------
MAX_EXAMPLES = 25
# Hypothesis' seed, fixed: a run sends the same requests every time (and after a refactor)
SEED = 0
# schema-valid requests the API may still refuse: a path that does not exist under
# EMBER_JOB_INPUT_DIR or lies outside the job roots (corpus and training paths), an overlap not
# below chunk_tokens, a retrain on the test split or with its own 'from' (rules a JSON schema
# cannot state)
RUNTIME_422 = (
    "no such file or folder", "path must be inside", "overlap must be smaller", "expected a path",
    "must not contain NUL", "unusable path", "job paths are disabled", "split 'test'",
    "the retrain pipeline trains from", "exclude each other",
)  # fmt: skip


def runtime_refusal(response: Any) -> bool:
    """A 404 (no such job) or a 422 that only the runtime can state (``RUNTIME_422``)."""
    return response.status_code == 404 or (
        response.status_code == 422 and any(m in response.text for m in RUNTIME_422)
    )


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, encoder: Any, tiny_model: Path
) -> Iterator[LiveServer]:
    from tests.workers.conftest import RedisServer as Server

    tmp = tmp_path_factory.mktemp("jobs-fuzz")
    server = Server(tmp / "redis")
    server.start()
    store = QdrantClientStore(path=tmp / "qdrant")
    (tmp / "inputs").mkdir()
    settings_ = make_settings(
        tmp, broker_url=server.url, api_keys=[KEY], job_input_dir=tmp / "inputs"
    )
    try:
        with LiveServer(create_app(settings_, encoder=encoder, store=store)) as running:
            yield running
    finally:
        store.close()
        server.stop()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_job_routes_conform_to_their_spec(live: LiveServer, mode: GenerationMode) -> None:
    full: Any = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = [r.ok() for r in full.include(path_regex="^/jobs").get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} == {
        ("POST", "/jobs/index"), ("POST", "/jobs/train"), ("POST", "/jobs/retrain"),
        ("GET", "/jobs"), ("GET", "/jobs/{job_id}"),
    }  # fmt: skip
    headers = {"Authorization": f"Bearer {KEY}"}
    fuzz(operations, mode, live.url, headers, runtime_refusal, MAX_EXAMPLES, SEED)


def test_job_spec_documents_the_routes(live: LiveServer) -> None:
    raw = httpx.get(f"{live.url}/openapi.json").json()
    post = raw["paths"]["/jobs/index"]["post"]
    assert {"202", "401", "403", "413", "422", "429"} <= set(post["responses"])
    assert "404" in raw["paths"]["/jobs/{job_id}"]["get"]["responses"]

"""POST /search, GET /tasks, GET /collections: ranking, instructions, filters, validation."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from encoders.instructions import DEFAULT_TASK, TASKS
from indexer import builds
from indexer.pipeline import begin_build, chunk_documents, index_chunks
from indexer.readers import read_corpus
from indexer.store import Store
from indexer.stores import open_store
from search_api.errors import ErrorJSONResponse
from tests.search_api.conftest import DOCS, ClientFactory, make_settings, rejected

BY_ID = {d["id"]: d for d in DOCS}


def doc_text(doc: dict[str, Any]) -> str:
    """What the indexer encodes for a one-chunk document (title line, then the text)."""
    return f"{doc['title']}\n{doc['text']}" if doc.get("title") else doc["text"]


def expected_scores(encoder: Any, query: str, instruction: str | None) -> dict[str, float]:
    """Cosine of the instructed query vector vs instruction-free document vectors."""
    q = encoder.encode_queries([query], instruction)[0]
    docs = encoder.encode_documents([doc_text(d) for d in DOCS])
    return {d["id"]: float(docs[i] @ q) for i, d in enumerate(DOCS)}


def search(client: TestClient, **body: Any) -> Any:
    r = client.post("/search", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def error_fields(body: dict[str, Any]) -> list[str]:
    return [".".join(str(p) for p in item["loc"][1:]) for item in body["detail"]]


# ---- ranking and instructions ------------------------------------------------------------------
def test_search_ranks_every_document_by_cosine(client: TestClient, encoder: Any) -> None:
    body = search(client, query="vitamin d and infection", top_k=100)
    hits = body["hits"]
    assert len(hits) == len(DOCS)
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert body["task"] == DEFAULT_TASK and body["instruction"] == TASKS[DEFAULT_TASK]
    assert body["collection"].startswith("default__")  # the alias is resolved
    want = expected_scores(encoder, "vitamin d and infection", TASKS[DEFAULT_TASK])
    for hit in hits:
        assert hit["score"] == pytest.approx(want[hit["payload"]["doc_id"]], abs=1e-5)


@pytest.mark.parametrize("task", ["scifact", "nq"])
def test_task_instruction_goes_to_the_query_only(
    client: TestClient, encoder: Any, task: str
) -> None:
    hits = search(client, query="does vitamin d prevent infection", task=task, top_k=100)["hits"]
    want = expected_scores(encoder, "does vitamin d prevent infection", TASKS[task])
    # documents were indexed instruction-free: the scores match only that way round
    assert {h["payload"]["doc_id"]: h["score"] for h in hits} == pytest.approx(want, abs=1e-5)
    wrong = expected_scores(encoder, "does vitamin d prevent infection", None)
    assert max(abs(want[k] - wrong[k]) for k in want) > 1e-3  # the instruction mattered


def test_custom_instruction_equals_task_and_empty_means_none(
    client: TestClient, encoder: Any
) -> None:
    q = "proteins in cells"
    by_task = search(client, query=q, task="scifact", top_k=100)
    by_text = search(client, query=q, instruction=TASKS["scifact"], top_k=100)
    assert by_text["task"] is None and by_text["instruction"] == TASKS["scifact"]
    assert [h["score"] for h in by_task["hits"]] == pytest.approx(
        [h["score"] for h in by_text["hits"]], abs=1e-6
    )
    bare = search(client, query=q, instruction="", top_k=100)
    assert bare["instruction"] is None
    want = expected_scores(encoder, q, None)
    assert {h["payload"]["doc_id"]: h["score"] for h in bare["hits"]} == pytest.approx(
        want, abs=1e-5
    )


def test_top_k_payload_and_collection_choice(client: TestClient) -> None:
    hits = search(client, query="fox", top_k=2)["hits"]
    assert len(hits) == 2
    payload = hits[0]["payload"]
    assert {"doc_id", "chunk_index", "text", "title", "source", "year", "lang"} <= set(payload)
    small = search(client, query="fox", collection="small", top_k=10)
    assert {h["payload"]["doc_id"] for h in small["hits"]} == {"fox", "vitd"}
    assert small["collection"].startswith("small__")


def test_default_collection_comes_from_settings(make_client: ClientFactory) -> None:
    client = make_client(api_default_collection="small")
    hits = search(client, query="fox", top_k=10)["hits"]
    assert {h["payload"]["doc_id"] for h in hits} == {"fox", "vitd"}


# ---- filters -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        ({"source": "pubmed"}, {"vitd", "cells", "claim"}),
        ({"source": ["web", "arxiv"]}, {"fox", "rank", "llm"}),
        ({"year": {"gte": 2011, "lt": 2024}}, {"cells", "claim", "rank"}),
        ({"source": "pubmed", "lang": "en"}, {"vitd", "claim"}),
        ({"year": 2004}, {"vitd"}),
        ({"source": "nowhere"}, set()),
    ],
)
def test_filters(client: TestClient, filter: dict[str, Any], expected: set[str]) -> None:
    hits = search(client, query="anything", filter=filter, top_k=100)["hits"]
    assert {h["payload"]["doc_id"] for h in hits} == expected


@pytest.mark.parametrize(
    "filter",
    [
        {"year": {"between": [1, 2]}},
        {"year": {}},
        {"source": []},
        {"source": {"gte": "a"}},
        {"source": {"x": 1}},
        {"year": {"gte": None}},
    ],
)
def test_bad_filters_are_422_naming_the_filter(client: TestClient, filter: Any) -> None:
    out = rejected(client, "/search", {"query": "x", "filter": filter})
    assert all(f.startswith("filter") for f in error_fields(out))
    assert "filter" in out["message"]


# Inputs that once answered 500 (and dropped the connection): integers beyond Qdrant's int64 and
# lone surrogates (valid JSON escapes, no unicode text) in a filter value or the instruction.
@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"filter": {"a": -9223372036854775809}}, "filter.a", "integer out of range"),
        ({"filter": {"doc_id": 100000000000000000000}}, "filter.doc_id", "integer out of range"),
        ({"filter": {"a": [1, 2**63]}}, "filter.a", "integer out of range (at 1)"),
        ({"filter": {"a": "\ud800"}}, "filter.a", "not valid unicode"),
        ({"filter": {"a": ["x", "\udfff"]}}, "filter.a", "not valid unicode (at 1)"),
        ({"instruction": "\ud800 Find:"}, "instruction", "not valid unicode"),
    ],
)
def test_unrepresentable_inputs_are_422_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str, reason: str
) -> None:
    raw = json.dumps({"query": "x", **body})  # ASCII: the surrogates travel as JSON escapes
    r = client.post("/search", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert error_fields(r.json()) == [field]
    assert r.json()["message"].startswith(f"{field}: ") and reason in r.json()["message"]


def test_the_int64_bounds_are_accepted(client: TestClient) -> None:
    for value in (-(2**63), 2**63 - 1):
        assert search(client, query="x", filter={"year": value})["hits"] == []


def test_a_lone_surrogate_in_a_key_is_422(client: TestClient) -> None:
    raw = r'{"query": "x", "\ud800": 1}'
    r = client.post("/search", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "unicode" in r.json()["message"]


def test_an_error_body_echoing_a_lone_surrogate_still_renders() -> None:
    body = {"detail": [{"loc": ["body", "\ud800"], "msg": "x"}], "message": "\ud800: x"}
    assert json.loads(ErrorJSONResponse(status_code=422, content=body).body) == body


# ---- validation and errors ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "query"),
        ({"query": ""}, "query"),
        ({"query": "   "}, "query"),
        ({"query": 7}, "query"),
        ({"query": "x", "top_k": 0}, "top_k"),
        ({"query": "x", "top_k": 101}, "top_k"),
        ({"query": "x", "top_k": "ten"}, "top_k"),
        ({"query": "x", "task": "no_such_task"}, "task"),
        ({"query": "x", "task": "nq", "instruction": "Find:"}, "instruction"),
        ({"query": "x", "collection": "../etc"}, "collection"),
        ({"query": "x", "topk": 3}, "topk"),
    ],
)
def test_validation_errors_name_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    out = rejected(client, "/search", body)
    assert field in error_fields(out)
    assert out["message"].startswith(field)


def test_unknown_task_lists_the_known_ones(client: TestClient) -> None:
    r = client.post("/search", json={"query": "x", "task": "nope"})
    assert r.status_code == 422
    assert "scifact" in r.json()["detail"][0]["msg"]


def test_invalid_json_is_422(client: TestClient) -> None:
    r = client.post("/search", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_unknown_collection_is_404_naming_it(client: TestClient) -> None:
    r = client.post("/search", json={"query": "x", "collection": "missing_one"})
    assert r.status_code == 404
    assert "missing_one" in r.json()["message"]
    assert error_fields(r.json()) == ["collection"]


def test_collection_of_another_encoder_is_409(
    make_client: ClientFactory, tmp_path: Any, encoder: Any
) -> None:
    other = open_store(make_settings(tmp_path / "other"))
    try:
        other.create_collection("docs__0123456789ab__v1", {"dense": encoder.dim})
        other.switch_alias("docs", "docs__0123456789ab__v1")
        client = make_client(app_store=other)
        r = client.post("/search", json={"query": "x", "collection": "docs"})
        assert r.status_code == 409
        assert "0123456789ab" in r.json()["message"]
        listed = client.get("/collections").json()["collections"]
        assert [c["searchable"] for c in listed] == [False]
    finally:
        other.close()


def test_unfinished_build_is_409_and_not_listed_as_searchable(
    make_client: ClientFactory, own_store: Store, encoder: Any, corpus_file: Any
) -> None:
    served = own_store.get_alias("docs")
    partial = begin_build(own_store, "docs", encoder)  # a build still being written
    chunks = list(chunk_documents(read_corpus(corpus_file), encoder.tokenizer))
    index_chunks(own_store, partial, encoder, chunks[:2])
    client = make_client(app_store=own_store)
    r = client.post("/search", json={"query": "fox", "collection": partial})
    assert r.status_code == 409
    assert partial in r.json()["message"] and "has not finished" in r.json()["message"]
    assert error_fields(r.json()) == ["collection"]
    r = client.post("/search", json={"query": "fox", "collection": "docs"})
    assert r.status_code == 200 and r.json()["collection"] == served
    listed = {c["name"]: c for c in client.get("/collections").json()["collections"]}
    assert (listed[partial]["complete"], listed[partial]["searchable"]) == (False, False)
    assert (listed[served]["complete"], listed[served]["searchable"]) == (True, True)
    builds.forget(partial)


def test_instruction_filling_the_query_window_is_422(client: TestClient) -> None:
    long_instruction = "Retrieve the relevant passages " * 200
    r = client.post("/search", json={"query": "fox", "instruction": long_instruction})
    assert r.status_code == 422
    assert error_fields(r.json()) == ["instruction"]


def test_store_failure_is_a_plain_500(
    make_client: ClientFactory, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(raise_server_exceptions=False)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire at /secret/path")

    monkeypatch.setattr(store, "search_batch", broken)
    r = client.post("/search", json={"query": "x"})
    assert r.status_code == 500
    assert r.json() == {"detail": "internal server error", "message": "internal server error"}
    assert "secret" not in r.text and "Traceback" not in r.text


# ---- tasks and collections ---------------------------------------------------------------------
def test_tasks_lists_every_instruction(client: TestClient) -> None:
    body = client.get("/tasks").json()
    assert body["default"] == DEFAULT_TASK
    assert {t["name"]: t["instruction"] for t in body["tasks"]} == TASKS


def test_collections(client: TestClient, encoder: Any) -> None:
    body = client.get("/collections").json()
    assert body["default"] == "default"
    by_alias = {a: c for c in body["collections"] for a in c["aliases"]}
    assert set(by_alias) == {"default", "small"}
    assert by_alias["default"]["points"] == len(DOCS)
    assert by_alias["small"]["points"] == 2
    assert by_alias["default"]["vectors"] == {"dense": encoder.dim}
    assert by_alias["default"]["sparse"] == ["bm25"]
    assert by_alias["default"]["encoder_fingerprint"] == encoder.fingerprint
    assert by_alias["default"]["searchable"] is True


def test_scores_are_cosines_of_unit_vectors(client: TestClient) -> None:
    hits = search(client, query="fox", top_k=100)["hits"]
    assert all(-1.0 - 1e-5 <= h["score"] <= 1.0 + 1e-5 for h in hits)
    assert np.isfinite([h["score"] for h in hits]).all()

"""Requests a client gets wrong at the HTTP level get a message that says what to fix: where a
JSON body stops parsing, that a body must be JSON, that it is empty, and that a text with
nothing visible in it (NUL, zero-width marks) is refused by /search and /v1/embeddings alike."""

from __future__ import annotations

import re
import sys
import unicodedata

import pytest
from fastapi.testclient import TestClient

from search_api.schemas.fields import INVISIBLE_RANGES
from tests.search_api.conftest import ClientFactory

JSON = {"content-type": "application/json"}


def test_invalid_json_names_the_body_and_the_place(client: TestClient) -> None:
    r = client.post("/search", content=b'{"query": "fox",\n  "top_k": }', headers=JSON)
    assert r.status_code == 422
    body = r.json()
    assert body["detail"][0]["loc"] == ["body"]
    assert body["message"].startswith("body: invalid JSON at line 2, column 12 (char 28): ")
    assert "Expecting value" in body["message"]


def test_a_body_that_is_not_json_is_415_naming_the_content_type(client: TestClient) -> None:
    for path in ("/search", "/v1/embeddings"):
        r = client.post(path, content=b'{"query": "fox"}', headers={"content-type": "text/plain"})
        assert r.status_code == 415, path
        assert r.json()["message"] == (
            "body: send JSON with 'Content-Type: application/json' (got 'text/plain')"
        )
    # a +json media type is JSON
    r = client.post(
        "/search", content=b'{"query": "fox"}', headers={"content-type": "application/vnd.x+json"}
    )
    assert r.status_code == 200


def test_an_empty_body_says_so(client: TestClient) -> None:
    r = client.post("/search", content=b"", headers=JSON)
    assert r.status_code == 422
    assert r.json()["message"] == "body: the request body is empty: send a JSON object"


@pytest.mark.parametrize("text", ["\x00", "\x00\x00 ", "\u200b\u200d", " \t\n"])
def test_text_without_visible_characters_is_refused_on_both_routes(
    client: TestClient, text: str
) -> None:
    r = client.post("/search", json={"query": text})
    assert r.status_code == 422
    assert r.json()["message"].startswith("query: text has no visible characters")
    r = client.post("/v1/embeddings", json={"input": text})
    assert r.status_code == 422
    assert r.json()["message"].startswith("input: text has no visible characters")
    assert r.json()["error"]["param"] == "input"
    r = client.post("/v1/embeddings", json={"input": ["fine", text]})
    assert r.status_code == 422
    assert r.json()["message"].startswith("input: item 1: text has no visible characters")


@pytest.mark.parametrize(
    "text",
    [
        "\x16",
        "\x00",
        "\u200b\u200d",
        " \t\n",
        "\u2067\ufeff",
        "\U000e0001",
        "a\x00b",
        "fox\u200b",
        "\ue000",
        "x",
    ],
)
def test_the_schema_pattern_and_the_validator_agree(client: TestClient, text: str) -> None:
    # a text the OpenAPI pattern accepts is embedded, one it refuses is refused (the fuzzer
    # sent "\x16": the pattern was \S, the validator refused control characters)
    spec = client.get("/openapi.json").json()["components"]["schemas"]
    pattern = spec["SearchRequest"]["properties"]["query"]["pattern"]
    by_schema = re.search(pattern, text) is not None
    status = client.post("/v1/embeddings", json={"input": text}).status_code
    assert status == (200 if by_schema else 422)


def test_the_range_schema_refuses_what_the_api_refuses(client: TestClient) -> None:
    # the spec allowed {"gte": null} (a nullable bound) and {} that the API refuses with a 422
    spec = client.get("/openapi.json").json()["components"]["schemas"]["Range"]
    assert spec["minProperties"] == 1
    assert all(b.get("type") == "number" and "anyOf" not in b for b in spec["properties"].values())
    for bad in ({"gte": None}, {}):
        r = client.post("/search", json={"query": "fox", "filter": {"year": bad}})
        assert r.status_code == 422, bad
    r = client.post("/search", json={"query": "fox", "filter": {"year": {"gte": None}}})
    assert "range bound gte is null" in r.json()["message"]


def test_the_invisible_ranges_are_this_pythons_unicode_database() -> None:
    found: list[tuple[int, int]] = []
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        if ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf"):
            if found and found[-1][1] == cp - 1:
                found[-1] = (found[-1][0], cp)
            else:
                found.append((cp, cp))
    assert tuple(found) == INVISIBLE_RANGES, "regenerate search_api.schemas.fields.INVISIBLE_RANGES"


def test_visible_text_around_control_characters_is_embedded(client: TestClient) -> None:
    assert client.post("/v1/embeddings", json={"input": "a\x00b"}).status_code == 200
    assert client.post("/search", json={"query": "fox\u200b"}).status_code == 200


def test_body_errors_come_after_the_key_check(make_client: ClientFactory) -> None:
    keyed = make_client(api_keys=["k1"])
    r = keyed.post("/search", content=b'{"query": ', headers=JSON)
    assert r.status_code == 401
    r = keyed.post("/search", content=b'{"query": ', headers={**JSON, "authorization": "Bearer k1"})
    assert r.status_code == 422
    assert r.json()["message"].startswith("body: invalid JSON at line 1, column 11")


def test_a_domain_error_raised_deep_answers_its_own_status(client: TestClient) -> None:
    from encoders.loading import ModelNotFoundError
    from indexer.search import EncoderMismatchError

    app = client.app

    @app.get("/_raise/{kind}")  # type: ignore[attr-defined]
    def _raise(kind: str) -> None:
        if kind == "mismatch":
            raise EncoderMismatchError("collection 'x' was built by another encoder")
        raise ModelNotFoundError("/secret/path is not a model")

    r = client.get("/_raise/mismatch")
    assert r.status_code == 409
    assert r.json()["message"] == "collection 'x' was built by another encoder"
    r = client.get("/_raise/model")  # no status: the server's fault, no internals shown
    assert r.status_code == 500
    assert r.json()["message"] == "internal server error"


def test_a_request_after_the_store_closed_answers_503_not_a_traceback(client: TestClient) -> None:
    """Handlers read the store and encoders through ``ApiState.live_*``: a state emptied under
    them (a shutdown racing a request) is a 503 with Retry-After, never an AssertionError."""
    state = client.app.state.ember  # type: ignore[attr-defined]
    store, encoders, encoder = state.store, state.encoders, state.encoder
    try:
        state.store = None
        for path, body in (("/search", {"query": "fox"}), ("/collections", None)):
            r = client.post(path, json=body) if body else client.get(path)
            assert r.status_code == 503, (path, r.text)
            assert r.json()["message"] == "service unavailable: the store is closed"
            assert r.headers["retry-after"] == "5"
        state.store, state.encoder = store, None
        r = client.post("/v1/embeddings", json={"input": "fox"})
        assert r.status_code == 503
        assert r.json()["message"] == "service unavailable: no encoder is loaded"
    finally:
        state.store, state.encoders, state.encoder = store, encoders, encoder

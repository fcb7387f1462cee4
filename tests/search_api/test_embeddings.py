"""POST /v1/embeddings: the OpenAI request and response shapes, on the served encoder."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient

from tests.search_api.conftest import ClientFactory, LiveServer, rejected

TEXTS = ["The quick brown fox.", "Vitamin D deficiency", "cosine similarity of embeddings"]


def embed(client: TestClient, **body: Any) -> Any:
    r = client.post("/v1/embeddings", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_list_input_matches_instruction_free_encoding(client: TestClient, encoder: Any) -> None:
    body = embed(client, input=TEXTS, model=encoder.config.name)
    assert body["object"] == "list" and body["model"] == encoder.config.name
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert all(d["object"] == "embedding" for d in body["data"])
    got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    want = encoder.encode_documents(TEXTS)
    np.testing.assert_allclose(got, want, atol=1e-6)
    # as-is: no query instruction was applied
    instructed = encoder.encode_queries(TEXTS, "Given a web search query, retrieve passages:")
    assert np.abs(got - instructed).max() > 1e-3


def test_string_input_and_usage_counts_tokens(client: TestClient, encoder: Any) -> None:
    body = embed(client, input=TEXTS[0])
    assert len(body["data"]) == 1 and len(body["data"][0]["embedding"]) == encoder.dim
    tokens = len(encoder.tokenizer(TEXTS[0], add_special_tokens=True)["input_ids"])
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    many = embed(client, input=TEXTS)
    total = sum(len(encoder.tokenizer(t, add_special_tokens=True)["input_ids"]) for t in TEXTS)
    assert many["usage"]["prompt_tokens"] == total


def test_base64_is_little_endian_float32(client: TestClient) -> None:
    floats = embed(client, input=TEXTS)
    packed = embed(client, input=TEXTS, encoding_format="base64")
    for f, b in zip(floats["data"], packed["data"], strict=True):
        assert isinstance(b["embedding"], str)
        decoded = np.frombuffer(base64.b64decode(b["embedding"]), dtype="<f4")
        np.testing.assert_array_equal(decoded, np.asarray(f["embedding"], dtype=np.float32))


def test_dimensions_truncate_then_renormalise(client: TestClient, encoder: Any) -> None:
    full = np.array([d["embedding"] for d in embed(client, input=TEXTS)["data"]])
    cut = np.array([d["embedding"] for d in embed(client, input=TEXTS, dimensions=8)["data"]])
    assert cut.shape == (len(TEXTS), 8)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-6)
    want = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, want, atol=1e-6)
    same = np.array(
        [d["embedding"] for d in embed(client, input=TEXTS, dimensions=encoder.dim)["data"]]
    )
    np.testing.assert_allclose(same, full, atol=1e-7)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "input"),
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": ["ok", ""]}, "input"),
        ({"input": [1, 2, 3]}, "input"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({"input": "x", "dimensions": 33}, "dimensions"),
        ({"input": "x", "temperature": 1}, "temperature"),
    ],
)
def test_validation_errors_name_the_field_openai_style(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    out = rejected(client, "/v1/embeddings", body)
    fields = {str(item["loc"][1]) for item in out["detail"]}
    assert field in fields
    assert out["error"]["type"] == "invalid_request_error"
    assert out["error"]["param"].split(".")[0] == field


def test_too_many_inputs(make_client: ClientFactory) -> None:
    client = make_client(api_max_inputs=4)
    assert client.post("/v1/embeddings", json={"input": ["a"] * 4}).status_code == 200
    r = client.post("/v1/embeddings", json={"input": ["a"] * 5})
    assert r.status_code == 422
    assert r.json()["message"] == "input: at most 4 inputs per call, got 5"


@pytest.mark.parametrize("model", ["text-embedding-3-small", "", None])
def test_model_is_ignored_and_the_served_one_named(
    client: TestClient, encoder: Any, model: str | None
) -> None:
    body = embed(client, input="x", model=model)
    assert body["model"] == encoder.config.name


def test_the_openai_client_works_against_it(
    live_server: Callable[..., LiveServer], encoder: Any
) -> None:
    """The official client: it asks for base64 by default and decodes it as float32."""
    server = live_server(api_keys=["sk-local"])
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-local", max_retries=0)
    out = client.embeddings.create(input=TEXTS, model="text-embedding-3-small")
    assert out.model == encoder.config.name
    got = np.array([d.embedding for d in out.data], dtype=np.float32)
    np.testing.assert_allclose(got, encoder.encode_documents(TEXTS), atol=1e-6)
    tokens = sum(len(encoder.tokenizer(t)["input_ids"]) for t in TEXTS)
    assert out.usage.prompt_tokens == tokens
    short = client.embeddings.create(input="one text", model="m", dimensions=8)
    assert len(short.data[0].embedding) == 8
    with pytest.raises(openai.UnprocessableEntityError) as err:  # the message surfaces
        client.embeddings.create(input="x", model="m", dimensions=10_000)
    assert "dimensions" in str(err.value)
    bad_key = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        bad_key.embeddings.create(input="x", model="m")

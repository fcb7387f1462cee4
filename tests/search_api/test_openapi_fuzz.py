"""Schemathesis over the served OpenAPI spec, against a real uvicorn server with API keys on.

Each operation gets a bounded number of generated requests, schema-valid and schema-invalid
(derandomized, so a run is reproducible); every default check applies: no 5xx, documented
status codes, content types, headers and response schemas, invalid data rejected, valid data
accepted, and no route that ignores the API keys.

The one kind of valid-by-schema request the API may refuse is a query whose instruction fills the
encoder's token window (no text token left to pool): that is a 422 about tokens, which a JSON
schema cannot express. It is allowed only with exactly that message.

The spec is fetched from the running server (it carries runtime limits: the encoder's dimension,
the max inputs per call), so the operations are fuzzed from one test rather than parametrized at
collection time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis import GenerationMode

from search_api.app import create_app
from tests.search_api.conftest import LiveServer, fuzz, make_settings

KEY = "fuzz-key"
MAX_EXAMPLES = 25  # per operation and mode
TOKEN_WINDOW_422 = "has no text left to encode"
# Hypothesis' seed, fixed: a run sends the same requests every time (and after a refactor)
SEED = 0


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, encoder: Any, store: Any
) -> Iterator[LiveServer]:
    settings_ = make_settings(tmp_path_factory.mktemp("fuzz"), api_keys=[KEY], api_max_inputs=8)
    with LiveServer(create_app(settings_, encoder=encoder, store=store)) as live:
        yield live


def token_window_422(response: Any) -> bool:
    """The one refusal of a valid-by-schema request: an instruction that fills the window."""
    return response.status_code == 422 and TOKEN_WINDOW_422 in response.text


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_spec(server: LiveServer, mode: GenerationMode) -> None:
    full: Any = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    schema: Any = full.exclude(path_regex="^/jobs")  # the workers' routes are fuzzed with them
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/search", "/v1/embeddings", "/collections"}
    if mode == GenerationMode.NEGATIVE:  # GET /health, /tasks, /collections: nothing to invalidate
        operations = [
            op for op in operations if any(len(i) for i in (op.body, op.query, op.path_parameters))
        ]
    headers = {"Authorization": f"Bearer {KEY}"}
    fuzz(operations, mode, server.url, headers, token_window_422, MAX_EXAMPLES, SEED)


def test_the_spec_states_the_runtime_limits(server: LiveServer, encoder: Any) -> None:
    raw = httpx.get(f"{server.url}/openapi.json").json()
    assert set(raw["paths"]) >= {"/search", "/v1/embeddings", "/collections", "/health", "/tasks"}
    search = raw["paths"]["/search"]["post"]
    assert {"401", "403", "404", "413", "422", "429", "503"} <= set(search["responses"])
    assert "HTTPBearer" in raw["components"]["securitySchemes"]
    paging = raw["components"]["schemas"]["SearchRequest"]["properties"]
    assert paging["offset"]["minimum"] == 0 and paging["offset"]["maximum"] == 1000
    assert paging["group_by"]["default"] == "doc_id"
    passage = raw["components"]["schemas"]["Passage"]["properties"]
    assert {"id", "chunk", "text", "score"} <= set(passage)
    props = raw["components"]["schemas"]["EmbeddingsRequest"]["properties"]
    assert {"type": "integer", "minimum": 1, "maximum": encoder.dim} in props["dimensions"]["anyOf"]
    arrays = [s for s in props["input"]["anyOf"] if s.get("type") == "array"]
    assert arrays and arrays[0]["maxItems"] == 8

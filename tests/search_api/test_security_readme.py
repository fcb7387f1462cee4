"""The README's security section, route by route: what answers without a key once keys are
configured, and what answers 401 (no key) / 403 (a wrong key)."""

from __future__ import annotations

import pytest

from tests.search_api.conftest import ClientFactory

OPEN = [("GET", "/health"), ("GET", "/tasks"), ("GET", "/metrics"), ("GET", "/"),
        ("GET", "/docs"), ("GET", "/redoc"), ("GET", "/openapi.json")]  # fmt: skip
KEYED = [
    ("POST", "/search", {"query": "fox"}),
    ("GET", "/collections", None),
    ("POST", "/v1/embeddings", {"input": "fox"}),
    ("GET", "/jobs", None),
    ("GET", "/jobs/nope", None),
    ("POST", "/jobs/index", {"collection": "x", "documents": [{"id": "a", "text": "b"}]}),
]


def test_the_open_routes_need_no_key(make_client: ClientFactory) -> None:
    client = make_client(api_keys=["k1"])
    for method, path in OPEN:
        assert client.request(method, path).status_code == 200, path


@pytest.mark.parametrize(("method", "path", "body"), KEYED)
def test_the_keyed_routes_answer_401_and_403(
    make_client: ClientFactory, method: str, path: str, body: object
) -> None:
    client = make_client(api_keys=["k1"])
    r = client.request(method, path, json=body)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    r = client.request(method, path, json=body, headers={"authorization": "Bearer nope"})
    assert r.status_code == 403
    r = client.request(method, path, json=body, headers={"authorization": "Bearer k1"})
    assert r.status_code not in (401, 403)

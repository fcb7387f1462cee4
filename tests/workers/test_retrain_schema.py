"""``POST /jobs/retrain``'s request model and the worker's :class:`RetrainSpec` are written twice
(the API keeps its own field docs and unicode checks); this holds their fields, defaults,
limits and required set equal, so a limit changed on one side cannot drift from the other."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from search_api.schemas.jobs import RetrainJobRequest
from workers.retrain_spec import RetrainSpec


def contract(model: type[BaseModel]) -> tuple[dict[str, Any], list[str]]:
    schema = model.model_json_schema()
    fields = {
        name: {k: v for k, v in prop.items() if k not in ("description", "title")}
        for name, prop in schema["properties"].items()
    }
    return fields, sorted(schema.get("required", []))


def test_the_retrain_request_and_the_spec_accept_the_same_input() -> None:
    request, spec = contract(RetrainJobRequest), contract(RetrainSpec)
    assert request[1] == spec[1]
    assert sorted(request[0]) == sorted(spec[0])
    for name in request[0]:
        assert request[0][name] == spec[0][name], name


def test_a_request_converts_to_the_spec_unchanged() -> None:
    body = {"alias": "docs", "trainer": "t", "eval_set": "beir/scifact", "min_gain": 0.01}
    request = RetrainJobRequest.model_validate(body)
    assert RetrainSpec.model_validate(request.model_dump()).model_dump() == request.model_dump()

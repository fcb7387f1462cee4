"""Route modules. Each exposes ``router``; :func:`search_api.app.create_app` includes them, and
``jobs`` (owned by the workers package's author) when that module exists."""

from __future__ import annotations

from typing import Any

from search_api.schemas import ErrorResponse


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error codes a route can return (all share one error shape)."""
    text = {
        400: "malformed request (e.g. a body that is not UTF-8)",
        401: "missing API key",
        403: "invalid API key",
        404: "not found",
        408: "request body not received in time (EMBER_API_BODY_TIMEOUT_S)",
        409: "conflict",
        413: "request body too large",
        422: "validation error; `detail[].loc` names the field",
        429: "too many concurrent requests",
        503: "encoder still warming up",
    }
    return {c: {"model": ErrorResponse, "description": text[c]} for c in codes}


# every API route: limits and auth apply everywhere
LIMITS = (408, 413, 429)
AUTH = (401, 403)

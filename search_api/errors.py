"""Error responses: always JSON, validation errors name the field, never a traceback.

Shape (every 4xx/5xx): ``{"detail": str | [{"loc", "msg", "type"}], "message": str}``; under
``/v1/`` an OpenAI-style ``"error": {"message", "type", "param", "code"}`` is added so OpenAI
clients show the reason.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from encoders.errors import EmberError

log = logging.getLogger(__name__)


class ApiError(EmberError):
    """An error for the client: ``status``, a message and optionally the field it is about
    (an :class:`EmberError` whose status is always set)."""

    def __init__(
        self, status: int, message: str, loc: Sequence[str | int] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status: int = status
        self.message = message
        self.loc = list(loc) if loc is not None else None
        self.headers = headers


class ErrorJSONResponse(JSONResponse):
    """An error body always renders: a message echoing a client's lone surrogate (an unknown
    key, say) is written with JSON escapes instead of failing as UTF-8 (a 500)."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, allow_nan=False, separators=(",", ":")).encode()


def field_error(loc: Sequence[str | int], message: str, status: int = 422) -> ApiError:
    return ApiError(status, message, loc)


def _field_name(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def _non_json_body(request: Request, errors: Sequence[Any]) -> str | None:
    """The request's content type when it sent a body that is not JSON to a JSON route (FastAPI
    then validates the raw bytes, with a vague message), else None."""
    kind = request.headers.get("content-type")
    if not kind or not any(tuple(err.get("loc", ()))[:1] == ("body",) for err in errors):
        return None
    media = kind.split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return None
    return kind


def _item(err: Any, body: bytes) -> dict[str, Any]:
    """One validation error as ``{"loc", "msg", "type"}``; JSON syntax errors say where (line,
    column) and what, and an empty body says so, instead of pydantic's generic wording."""
    loc = [p if isinstance(p, int) else str(p) for p in err.get("loc", ())]
    msg = str(err.get("msg", "invalid value"))
    kind = str(err.get("type", "value_error"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind == "json_invalid":
        pos = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
        reason = str((err.get("ctx") or {}).get("error") or "not valid JSON")
        where = ""
        if pos is not None:
            before = body[:pos].decode("utf-8", "replace")
            line = before.count("\n") + 1
            column = len(before) - (before.rfind("\n") + 1) + 1
            where = f" at line {line}, column {column} (char {pos})"
        loc, msg = ["body"], f"invalid JSON{where}: {reason}"
    elif loc == ["body"] and kind == "missing":
        msg = "the request body is empty: send a JSON object"
    return {"loc": loc, "msg": msg, "type": kind}


def error_body(path: str, status: int, detail: Any, message: str, param: str | None = None) -> Any:
    """The JSON body of every error response (also used by the limits middleware)."""
    body: dict[str, Any] = {"detail": detail, "message": message}
    if path.startswith("/v1/"):
        kind = "invalid_request_error" if status < 500 else "server_error"
        body["error"] = {"message": message, "type": kind, "param": param, "code": None}
    return body


def _body(request: Request, status: int, detail: Any, message: str, param: str | None) -> Any:
    return error_body(request.url.path, status, detail, message, param)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> ErrorJSONResponse:
        errors = exc.errors()
        media = _non_json_body(request, errors)
        if media is not None:
            message = f"body: send JSON with 'Content-Type: application/json' (got {media!r})"
            detail = [{"loc": ["body"], "msg": message[6:], "type": "unsupported_media_type"}]
            return ErrorJSONResponse(
                status_code=415, content=_body(request, 415, detail, message, "body")
            )
        body = await request.body()  # read once (cached by Starlette): where JSON broke
        items = [_item(err, body) for err in errors]
        message = "; ".join(f"{_field_name(i['loc'])}: {i['msg']}" for i in items)
        param = _field_name(items[0]["loc"]) if items else None
        return ErrorJSONResponse(
            status_code=422, content=_body(request, 422, items, message, param)
        )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> ErrorJSONResponse:
        if exc.loc is not None:
            detail: Any = [{"loc": exc.loc, "msg": exc.message, "type": "value_error"}]
            message = f"{_field_name(exc.loc)}: {exc.message}"
            param: str | None = _field_name(exc.loc)
        else:
            detail, message, param = exc.message, exc.message, None
        return ErrorJSONResponse(
            status_code=exc.status,
            content=_body(request, exc.status, detail, message, param),
            headers=exc.headers,
        )

    @app.exception_handler(EmberError)
    async def _ember_error(request: Request, exc: EmberError) -> ErrorJSONResponse:
        # a domain error raised deep (store, reader, search): its own status, or a 500
        if exc.status is None:
            return await _unexpected(request, exc)
        return await _api_error(request, ApiError(exc.status, str(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> ErrorJSONResponse:
        message = str(exc.detail)
        return ErrorJSONResponse(
            status_code=exc.status_code,
            content=_body(request, exc.status_code, exc.detail, message, None),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> ErrorJSONResponse:
        # logged with its traceback on the server; the client gets no internals
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        message = "internal server error"
        return ErrorJSONResponse(
            status_code=500, content=_body(request, 500, message, message, None)
        )

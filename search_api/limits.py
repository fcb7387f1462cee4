"""Request limits, enforced before any route runs (pure ASGI middleware, no body re-parsing).

In this order, each before the next costs anything:

* API key: on the routes behind the keys, the ``Authorization`` header is checked first
  (:func:`search_api.security.check_api_key`): 401/403 before a slot is taken or a byte of the
  body is read, so clients without a key cannot hold slots.
* Concurrency: at most ``max_concurrent`` requests are served at a time; one more is refused at
  once with 429 and ``Retry-After`` rather than queued (a client should back off, and a queue
  would only hide overload behind latency). ``/health`` and ``/metrics`` are exempt so probes and
  scrapes keep working under load.
* Body size: a ``Content-Length`` over the limit is refused at once; a body without one (chunked)
  is counted while it is read and refused as soon as it passes the limit -> 413.
* Body time: the whole body must arrive within ``body_timeout_s`` (one deadline for all of it, so
  a trickle of bytes cannot extend it) -> 408 and the connection is closed, so a slow client
  holds a slot for at most that long.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from search_api.errors import error_body
from search_api.metrics import Metrics
from search_api.security import check_api_key

EXEMPT_PATHS = frozenset({"/health", "/metrics"})


async def send_error(
    scope: Scope, send: Send, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    raw = json.dumps(error_body(scope.get("path", ""), status, message, message)).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    head += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": raw})


class LimitsMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_concurrent: int,
        metrics: Metrics | None,
        body_timeout_s: float | None = None,
        api_keys: Sequence[str] = (),
        protected: Sequence[BaseRoute] = (),
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_concurrent = max_concurrent
        self.metrics = metrics
        self.body_timeout_s = body_timeout_s
        self.api_keys = list(api_keys)
        self.protected = [r for r in protected if getattr(r, "path_regex", None) is not None]
        self.active = 0  # one event loop: a plain counter is race-free

    def _needs_key(self, scope: Scope) -> bool:
        path = scope.get("path", "")
        return bool(self.api_keys) and any(
            r.path_regex.match(path)  # type: ignore[attr-defined]
            for r in self.protected
        )

    async def _check_key(self, scope: Scope, send: Send) -> bool:
        """True when the request may go on; else the 401/403 is sent."""
        header = next((v for k, v in scope.get("headers", []) if k == b"authorization"), None)
        error = check_api_key(self.api_keys, None if header is None else header.decode("latin-1"))
        if error is None:
            return True
        self._reject("unauthorized" if error.status == 401 else "forbidden")
        await send_error(scope, send, error.status, error.message, error.headers)
        return False

    def _reject(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.rejected.labels(reason).inc()

    async def _too_large(self, scope: Scope, send: Send) -> None:
        self._reject("body_too_large")
        message = f"request body is larger than the limit of {self.max_body_bytes} bytes"
        await send_error(scope, send, 413, message)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exempt = scope.get("path") in EXEMPT_PATHS
        if self._needs_key(scope) and not await self._check_key(scope, send):
            return
        if not exempt and self.active >= self.max_concurrent:
            self._reject("too_many_requests")
            message = f"too many concurrent requests (limit {self.max_concurrent}); retry"
            await send_error(scope, send, 429, message, {"retry-after": "1"})
            return
        if not exempt:
            self.active += 1
        try:
            await self._with_body_limit(scope, receive, send)
        finally:
            if not exempt:
                self.active -= 1

    async def _with_body_limit(self, scope: Scope, receive: Receive, send: Send) -> None:
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await send_error(scope, send, 400, "invalid Content-Length header")
                    return
                if declared > self.max_body_bytes:
                    await self._too_large(scope, send)
                    return
        if scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        # read the body now (it is parsed whole anyway), counting bytes, then replay it
        buffered: list[Message] = []
        try:
            async with asyncio.timeout(self.body_timeout_s):
                too_large = await self._read_body(receive, buffered)
        except TimeoutError:
            self._reject("body_timeout")
            message = f"request body not received within {self.body_timeout_s:g} s"
            await send_error(scope, send, 408, message, {"connection": "close"})
            return
        if too_large:
            await self._too_large(scope, send)
            return

        async def replay() -> Message:
            if buffered:
                return buffered.pop(0)
            return await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive, buffered: list[Message]) -> bool:
        """Receive the whole body into ``buffered``; True when it passed the size limit."""
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                buffered.append(message)
                return False
            total += len(message.get("body", b""))
            if total > self.max_body_bytes:
                return True
            buffered.append(message)
            if not message.get("more_body", False):
                return False

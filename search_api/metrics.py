"""Prometheus metrics, one registry per app (several apps in one process do not collide).

* ``ember_http_request_duration_seconds{method,route,status}``: latency per route *template*
  (``/jobs/{id}``, not the raw path, so labels stay bounded); unknown paths are ``other``.
* ``ember_http_requests_in_flight``: requests being served now.
* ``ember_encoder_batch_size``: texts per encoder call (micro-batches when batching is on).
* ``ember_encoder_batch_seconds``: time per encoder call.
* ``ember_encoder_queue_depth``: requests waiting for, or inside, an encoder forward.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "ember_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "ember_http_requests_in_flight", "HTTP requests being served", registry=self.registry
        )
        self.batch_size = Histogram(
            "ember_encoder_batch_size",
            "Texts per encoder call",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "ember_encoder_batch_seconds",
            "Seconds per encoder call",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "ember_encoder_queue_depth",
            "Requests waiting for or inside an encoder forward",
            registry=self.registry,
        )
        self.rejected = Counter(
            "ember_http_rejected",
            "Requests refused by a limit, by reason",
            ["reason"],
            registry=self.registry,
        )

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def set_queue_depth(self, depth: int) -> None:
        self.queue_depth.set(depth)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Times every HTTP request and labels it with the matched route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics, static_paths: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.static_paths = static_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            route = scope.get("route")
            template = getattr(route, "path", None)
            if template is None:
                path = scope.get("path", "")
                template = path if path in self.static_paths else "other"
            self.metrics.latency.labels(scope.get("method", ""), template, str(status)).observe(
                time.perf_counter() - started
            )

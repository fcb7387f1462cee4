"""The FastAPI app factory.

``create_app(settings, encoder, store)`` builds one app; tests inject a tiny encoder and a store in
a temporary folder, ``ember serve`` passes nothing and gets the configured encoder and the
embedded store. The encoder is loaded and warmed up in the background after startup:
``GET /health`` answers 503 until then, and so do the routes that need the encoder.

Routers live in :mod:`search_api.routes`; ``search_api.routes.jobs`` (the job API, written with
the workers) is included when it exists, behind the same API keys. The app never imports
``workers`` itself. ``/docs`` and ``/redoc`` load their Swagger UI / ReDoc assets from the app
(fastapi-offline's packaged copies), never from a CDN, so they work without network.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import logging
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi_offline import FastAPIOffline

from search_api.batcher import EncodeFn, MicroBatcher, Mode, Named
from search_api.errors import install_error_handlers
from search_api.limits import LimitsMiddleware
from search_api.metrics import Metrics, MetricsMiddleware
from search_api.routes import embeddings, meta, search, web
from search_api.security import require_api_key
from search_api.served import WARMUP_QUERY, EncoderRegistry, Served, encode_fn, named_vectors
from search_api.settings import broker_without_qdrant
from search_api.state import ApiState

if TYPE_CHECKING:
    from encoders import Encoder
    from indexer.store import Store
    from search_api.settings import ApiSettings

log = logging.getLogger(__name__)

JOBS_MODULE = "search_api.routes.jobs"


def _encode_fn(state: ApiState) -> EncodeFn:
    """:func:`search_api.served.named_vectors` with the default encoder, loaded after the
    batcher starts."""

    def encode(texts: list[str], mode: Mode, instruction: str | None) -> Named:
        if state.encoder is None:
            raise RuntimeError("encoder not loaded")
        return named_vectors(state.encoder, texts, mode, instruction)

    return encode


async def _warm_up(state: ApiState) -> None:
    """Load the encoder (unless injected), run one query through it, then report ready."""
    from encoders.instructions import DEFAULT_TASK, instruction_for

    try:
        if state.encoder is None:
            from encoders import load_encoder

            state.encoder = await run_in_threadpool(load_encoder, state.settings.encoder)
        encoder = state.encoder
        assert state.batcher is not None
        # through the batcher, so the first forward also warms its worker thread
        await state.batcher.encode([WARMUP_QUERY], "query", instruction_for(DEFAULT_TASK))
        await run_in_threadpool(lambda: encoder.dim)
        assert state.encoders is not None
        state.encoders.set_default(Served(encoder, state.batcher, state.settings.encoder))
        state.status = "ready"
        log.info("encoder %s ready (dim %d)", encoder.config.name, encoder.dim)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        state.status = "failed"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        state.error = f"encoder failed to load: {first}"
        log.error("encoder %r failed to load", state.settings.encoder, exc_info=exc)


def _walk_schema(node: Any, kind: str) -> Iterator[dict[str, Any]]:
    """The sub-schemas of ``node`` (itself or its ``anyOf`` members) of JSON type ``kind``."""
    if isinstance(node, dict):
        if node.get("type") == kind:
            yield node
        for member in node.get("anyOf", []):
            yield from _walk_schema(member, kind)


def _install_openapi(app: FastAPI, state: ApiState) -> None:
    """Put the limits known only at runtime into the spec: ``input`` at most
    ``api_max_inputs`` texts, ``dimensions`` at most the encoder's dimension (once the encoder
    is known; until then the spec is rebuilt on every request)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = build()
        app.openapi_schema = None  # FastAPI caches it; decide below
        props = spec.get("components", {}).get("schemas", {}).get("EmbeddingsRequest", {})
        props = props.get("properties", {})
        for node in _walk_schema(props.get("input"), "array"):
            node["maxItems"] = state.settings.api_max_inputs
        if state.encoder is not None:
            for node in _walk_schema(props.get("dimensions"), "integer"):
                node["maximum"] = state.encoder.dim
            app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def _behind_keys(route: Any) -> bool:
    """Whether ``route`` (of a router) depends on :func:`require_api_key`."""
    stack = list(getattr(getattr(route, "dependant", None), "dependencies", []))
    while stack:
        dependency = stack.pop()
        if dependency.call is require_api_key:
            return True
        stack.extend(dependency.dependencies)
    return False


def create_app(
    settings: ApiSettings | None = None,
    encoder: Encoder | None = None,
    store: Store | None = None,
) -> FastAPI:
    """Build the app. ``encoder``/``store`` default to ``settings.encoder`` and the configured
    store (embedded under ``data_dir`` unless ``qdrant_url``); an injected store is not closed
    on shutdown, one opened here is."""
    if settings is None:
        from search_api.settings import get_api_settings

        settings = get_api_settings()
    warning = broker_without_qdrant(settings)
    if warning is not None:
        log.warning(warning)
    metrics = Metrics()
    state = ApiState(settings=settings, metrics=metrics, encoder=encoder, store=store)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owns_store = state.store is None
        if state.store is None:
            from indexer.stores import open_store

            state.store = await run_in_threadpool(open_store, settings)

        def make_batcher(encode: EncodeFn) -> MicroBatcher:
            return MicroBatcher(
                encode,
                enabled=settings.api_micro_batching,
                max_batch=settings.api_max_batch,
                max_wait_s=settings.api_batch_wait_ms / 1000.0,
                on_batch=metrics.observe_batch,
                on_depth=metrics.set_queue_depth,
            )

        state.batcher = make_batcher(_encode_fn(state))
        state.encoders = EncoderRegistry(settings, lambda enc: make_batcher(encode_fn(enc)))
        await state.batcher.start()
        warm = asyncio.create_task(_warm_up(state), name="ember-warm-up")
        try:
            yield
        finally:
            warm.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warm
            state.status = "starting"
            await state.encoders.close()
            await state.batcher.stop()
            if owns_store and state.store is not None:
                state.store.close()
                state.store = None

    # FastAPIOffline: FastAPI with /docs (Swagger UI) and /redoc served from the assets packaged
    # in fastapi-offline (under /static-offline-docs), not from a CDN, so they work offline
    app = FastAPIOffline(
        title="Ember search API",
        version="0.1.0",
        description=(
            "Search and embeddings with decoder-only LLM encoders. Queries get a task "
            "instruction; documents are encoded instruction-free."
        ),
        lifespan=lifespan,
    )
    app.state.ember = state
    _install_openapi(app, state)
    install_error_handlers(app)
    routers = [module.router for module in (meta, search, embeddings, web)]
    for router in routers:
        app.include_router(router)
    # the routes behind the keys, for the limits middleware's key check (no prefixes here)
    keyed = [route for router in routers for route in router.routes if _behind_keys(route)]
    if importlib.util.find_spec(JOBS_MODULE) is not None:
        jobs = importlib.import_module(JOBS_MODULE)
        app.include_router(jobs.router, dependencies=[Depends(require_api_key)])
        routers.append(jobs.router)
        keyed += jobs.router.routes  # every one, through the include's dependency

    # raw paths that may label metrics for requests refused before routing (413/429)
    static_paths = frozenset(
        p
        for routes in [app.routes, *(r.routes for r in routers)]
        for route in routes
        if isinstance(p := getattr(route, "path", None), str) and "{" not in p
    )
    app.add_middleware(
        LimitsMiddleware,
        max_body_bytes=settings.api_max_body_bytes,
        max_concurrent=settings.api_max_concurrent,
        metrics=metrics,
        body_timeout_s=settings.api_body_timeout_s,
        api_keys=settings.api_keys,
        protected=keyed,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics, static_paths=static_paths)
    return app

"""Service routes: health, tasks, collections, metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from encoders.instructions import DEFAULT_TASK, TASKS
from search_api.routes import AUTH, LIMITS, error_responses
from search_api.schemas import (
    CollectionOut,
    CollectionsResponse,
    HealthResponse,
    TaskInfo,
    TasksResponse,
)
from search_api.security import require_api_key
from search_api.served import describe, served_encoders
from search_api.state import ApiState, get_state, ready_state

router = APIRouter()


@router.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "starting or failed"}},
    tags=["service"],
)
async def health(state: Annotated[ApiState, Depends(get_state)]) -> JSONResponse:
    """200 with status 'ready' once the encoder is loaded and warmed up, else 503. ``encoder``,
    ``dim`` and ``fingerprint`` are the default encoder's; ``encoders`` lists every loaded one
    with the aliases whose builds it serves."""
    body = HealthResponse(status=state.status, detail=state.error)
    if state.ready and state.encoder is not None:
        body.encoder = state.encoder.config.name
        body.dim = state.encoder.dim
        body.fingerprint = state.encoder.fingerprint
        if state.encoders is not None:
            body.encoders, body.loading = await served_encoders(state)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=200 if state.ready else 503)


@router.get(
    "/tasks", response_model=TasksResponse, responses=error_responses(*LIMITS), tags=["search"]
)
def tasks() -> TasksResponse:
    """Task names accepted by POST /search and the instruction each prepends to the query."""
    return TasksResponse(
        default=DEFAULT_TASK,
        tasks=[TaskInfo(name=k, instruction=v) for k, v in TASKS.items()],
    )


@router.get(
    "/collections",
    response_model=CollectionsResponse,
    dependencies=[Depends(require_api_key)],
    responses=error_responses(*AUTH, *LIMITS, 503),
    tags=["search"],
)
async def collections(state: Annotated[ApiState, Depends(ready_state)]) -> CollectionsResponse:
    """Collections in the store with their aliases, sizes, the encoder that built them and
    whether this server can search them (a finished build whose encoder it serves or may load;
    an unfinished build is listed with ``complete: false`` and is never searchable)."""
    from indexer.pipeline import parse_version

    store, encoders = state.live_store, state.live_encoders
    infos = await run_in_threadpool(store.list_collections)
    views = await run_in_threadpool(lambda: [describe(state, info) for info in infos])
    out = []
    for info, (encoder, loaded, searchable, _) in zip(infos, views, strict=True):
        parsed = parse_version(info.name)
        fingerprint = parsed[1] if parsed else None
        out.append(
            CollectionOut(
                name=info.name,
                aliases=list(info.aliases),
                points=info.points,
                vectors=dict(info.vectors),
                sparse=list(info.sparse),
                encoder_fingerprint=fingerprint,
                complete=info.complete,
                encoder=encoder,
                encoder_loaded=loaded,
                searchable=info.complete and searchable and _holds_its_vectors(state, info),
            )
        )
    # an alias seen on a build of an encoder not loaded: start loading it (room permitting)
    encoders.prefetch(t for t in (v[3] for v in views) if t is not None)
    return CollectionsResponse(default=state.settings.api_default_collection, collections=out)


def _holds_its_vectors(state: ApiState, info: Any) -> bool:
    """The collection holds the named vectors its encoder searches (MoEE sum: hs + rw, no
    dense); for an encoder not loaded yet, a dense vector or MoEE's pair."""
    from indexer.pipeline import parse_version

    parsed = parse_version(info.name)
    served = state.encoders.get(parsed[1]) if parsed and state.encoders else None
    names = set(served.encoder.vector_dims) if served is not None else None
    if names is None:
        return "dense" in info.vectors or {"hs", "rw"} <= set(info.vectors)
    return names <= set(info.vectors)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus text format."""
    state = get_state(request)
    return Response(state.metrics.render(), media_type=state.metrics.content_type)

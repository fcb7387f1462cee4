"""POST /search: instructed query -> ranked hits from a collection (or alias)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from encoders.instructions import DEFAULT_TASK, TASKS
from indexer.groups import passages_of
from search_api.errors import ApiError, field_error
from search_api.routes import AUTH, LIMITS, error_responses
from search_api.schemas import Passage, SearchHit, SearchRequest, SearchResponse
from search_api.security import require_api_key
from search_api.served import EncoderLoadingError, Served
from search_api.state import ApiState, ready_state

router = APIRouter()


def resolve_instruction(req: SearchRequest) -> tuple[str | None, str | None]:
    """``(task, instruction)``: a custom instruction ('' = none), else the task's, else the
    default task's."""
    if req.instruction is not None:
        return None, req.instruction.strip() or None
    task = req.task or DEFAULT_TASK
    return task, TASKS[task]


@router.post(
    "/search",
    response_model=SearchResponse,
    dependencies=[Depends(require_api_key)],
    responses=error_responses(400, *AUTH, 404, 409, *LIMITS, 422, 503),
    tags=["search"],
)
async def search(
    req: SearchRequest, state: Annotated[ApiState, Depends(ready_state)]
) -> SearchResponse:
    """Rank the collection's documents (or chunks, with ``group_by: null``): dense (cosine
    similarity to the encoded query), sparse (Qdrant's BM25) or hybrid (both in one Qdrant
    query, fused by RRF, DBSF or the collection's fitted weighted formula).

    A document appears once, scored by its best chunk (the hit's id and payload are that
    chunk's), with its best matching chunks as ``passages``. ``offset`` pages: the next page
    starts exactly after this one's last hit.

    The task's instruction (or a custom one) is prepended to the query only; documents were
    encoded without instruction. Concurrent queries are encoded together (micro-batching).
    A collection built without BM25 vectors answers 409 to ``sparse``/``hybrid``; a build that
    has not finished (searched by its versioned name) answers 409.

    The query is encoded by the encoder that built the collection (``encoder`` and
    ``fingerprint`` in the answer; the fingerprint is the one in ``collection``'s versioned
    name): loaded the first time one of its builds is searched, waited for at most
    ``EMBER_API_ENCODER_WAIT_S`` (then 503 with Retry-After). A build whose encoder this server
    cannot load (no recorded spec, or one outside the allowed folders) answers 409.
    """
    from indexer.search import EncoderMismatchError
    from indexer.store import BuildIncompleteError, CollectionNotFoundError, parse_filter

    store, encoders = state.live_store, state.live_encoders
    task, instruction = resolve_instruction(req)
    name = req.collection or state.settings.api_default_collection
    filter = req.filter_dict()
    try:
        parse_filter(filter)
    except ValueError as exc:
        raise field_error(["body", "filter"], str(exc)) from None

    for attempt in range(2):
        try:
            target = await run_in_threadpool(encoders.target, store, name)
            async with encoders.lease(target) as served:
                return await _search_with(
                    state, req, served, name, target.collection, task, instruction
                )
        except CollectionNotFoundError:
            # an alias moved between resolving it and searching its (then pruned) old build
            if attempt == 0 and await run_in_threadpool(_is_alias, state, name):
                continue
            raise ApiError(
                404, f"collection or alias {name!r} not found", ["body", "collection"]
            ) from None
        except (EncoderMismatchError, BuildIncompleteError) as exc:
            # no spec recorded, a refused spec, a failed load; or a build not finished
            raise ApiError(409, str(exc), ["body", "collection"]) from None
        except EncoderLoadingError as exc:
            raise ApiError(503, str(exc), ["body", "collection"], RETRY_LOADING) from None
    raise AssertionError("unreachable")


RETRY_LOADING = {"retry-after": "2"}


def _is_alias(state: ApiState, name: str) -> bool:
    return state.live_store.get_alias(name) is not None


async def _search_with(
    state: ApiState, req: SearchRequest, served: Served, name: str, resolved: str,
    task: str | None, instruction: str | None,
) -> SearchResponse:  # fmt: skip
    """Search the resolved build with the encoder leased for it (it stays this request's even
    if the alias moves meanwhile)."""
    from indexer.search import resolve_mode, search_prepared
    from indexer.sparse import SparseUnavailableError

    store, encoder = state.live_store, served.encoder
    filter = req.filter_dict()
    try:
        mode = await run_in_threadpool(
            resolve_mode, store, resolved, req.mode, state.settings.search_mode
        )
    except SparseUnavailableError as exc:
        raise ApiError(409, str(exc), ["body", "mode"]) from None
    fusion = req.fusion.model_dump(exclude_none=True) if req.fusion else None

    named = None
    if mode != "sparse":
        named = await _encode_query(served, req, instruction)
    try:
        (hits,) = await run_in_threadpool(
            search_prepared, store, encoder, resolved, [req.query], named, mode=mode,
            top_k=req.top_k, filter=filter, fusion=fusion, offset=req.offset,
            group_by=req.group_by,
        )  # fmt: skip
    except ValueError as exc:  # the store refused the filter (or the collection's vectors)
        loc = ["body", "filter" if filter else "mode" if mode == "hybrid" else "collection"]
        raise ApiError(422, f"cannot search {name!r}: {exc}", loc) from None
    return SearchResponse(
        collection=resolved,
        task=task,
        instruction=instruction,
        mode=mode,
        group_by=req.group_by,
        offset=req.offset,
        encoder=served.name,
        fingerprint=served.fingerprint,
        hits=[
            SearchHit(
                id=h.id,
                score=h.score,
                payload=h.payload,
                passages=[Passage(**p) for p in passages_of(h)],
            )
            for h in hits
        ],
    )


async def _encode_query(
    served: Served, req: SearchRequest, instruction: str | None
) -> dict[str, np.ndarray]:
    """The query's named vectors ([1, dim] each), as the micro-batcher returns them."""
    named = await served.batcher.encode([req.query], "query", instruction)
    for vectors in named.values():
        vector = np.asarray(vectors[0], dtype=np.float32)
        if not np.isfinite(vector).all() or float(np.linalg.norm(vector)) < 1e-6:
            # e.g. an instruction so long that truncation left no query token to pool
            raise field_error(
                ["body", "instruction" if instruction and req.instruction else "query"],
                "the query has no text left to encode after the instruction and truncation "
                f"(query_max_length={served.encoder.config.query_max_length} tokens)",
            )
    return named

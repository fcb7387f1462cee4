"""Job routes: ``POST /jobs/index|train|retrain``, ``GET /jobs/{id}``, ``GET /jobs``.

The API talks to the workers only through task names and job records: :mod:`workers.client`
creates the record and sends ``ember.index`` / ``ember.train`` by name, :mod:`workers.jobs` reads
records back. Neither imports the task code, encoders or torch (a test checks it).

With a broker the job runs on the workers and the API returns at once (202). Embedded (no broker),
the job runs in this process on one background thread, on the API's own encoder and store: an
embedded store is locked to one process, so the API process is where its jobs must run.

Job paths are opened by whoever runs the job (a worker, or this process), so the API accepts
only paths inside the job roots (:mod:`workers.paths`): corpus paths and training inputs inside
``EMBER_JOB_INPUT_DIR`` (unset: refused; inline documents always work), training outputs inside
``EMBER_JOB_OUTPUT_DIR``; a retrain's evaluation set and corpus inside ``EMBER_JOB_INPUT_DIR``.
The workers check them again.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam

from search_api.errors import ApiError, field_error
from search_api.routes import AUTH, LIMITS, error_responses
from search_api.schemas.jobs import (
    IndexJobRequest,
    JobOut,
    JobsOut,
    RetrainJobRequest,
    TrainJobRequest,
)
from search_api.state import ApiState, get_state
from workers.paths import JobPathError, confine_input, confine_train_params

router = APIRouter(tags=["jobs"])
#: a route that creates a job: 202 with the job as first recorded (and its Location)
_creates_job = partial(router.post, status_code=202, response_model=JobOut)


def _job_store(request: Request, state: ApiState) -> Any:
    """One job store per app (a Redis connection pool, or the embedded job folder)."""
    from workers.jobs import open_job_store

    store = getattr(request.app.state, "ember_job_store", None)
    if store is None:
        store = request.app.state.ember_job_store = open_job_store(state.settings)
    return store


def _embedded_resources(state: ApiState) -> dict[str, Any]:
    """In-process jobs share the API's store and (once loaded) encoder."""
    if state.settings.broker_url:
        return {}
    if not state.ready or state.encoder is None or state.store is None:
        raise ApiError(
            503, "service unavailable: the encoder is warming up", headers={"retry-after": "5"}
        )
    return {"store": state.store, "encoder": state.encoder}


def _path_error(exc: JobPathError) -> ApiError:
    return field_error(["body", *exc.loc], exc.reason)


def _input_path(state: ApiState, raw: str) -> str:
    try:
        return confine_input(state.settings, raw, ("path",))
    except JobPathError as exc:
        raise _path_error(exc) from None


def _only_query(*allowed: str) -> Any:
    """A dependency refusing query parameters other than ``allowed`` (422 naming the first)."""

    def check(request: Request) -> None:
        for name in request.query_params:
            if name not in allowed:
                raise field_error(["query", name], f"unknown query parameter {name!r}")

    return Depends(check)


def _accepted(job: Any, response: Response) -> JobOut:
    response.headers["location"] = f"/jobs/{job.id}"
    return JobOut.model_validate(job.to_dict())


@_creates_job("/jobs/index", responses=error_responses(400, *AUTH, 422, *LIMITS, 503))
def create_index_job(
    body: IndexJobRequest,
    request: Request,
    response: Response,
    state: Annotated[ApiState, Depends(get_state)],
) -> JobOut:
    """Index documents (inline or a corpus path) into a new build of ``collection``; the alias
    moves to it only when every batch succeeded. Follow it with ``GET /jobs/{id}``."""
    from workers.client import submit_index

    path = _input_path(state, body.path) if body.path is not None else None
    resources = _embedded_resources(state)
    try:
        job = submit_index(
            state.settings,
            body.collection,
            path=path,
            documents=body.documents,
            fmt=body.format,
            on_error=body.on_error,
            batch_docs=body.batch_docs,
            chunk_tokens=body.chunk_tokens,
            overlap=body.overlap,
            keep_versions=body.keep_versions,
            payload_indexes=body.payload_indexes,
            **resources,
        )
    except ValueError as exc:
        raise field_error(["body"], str(exc)) from None
    return _accepted(job, response)


@_creates_job("/jobs/train", responses=error_responses(400, *AUTH, 422, *LIMITS))
def create_train_job(
    body: TrainJobRequest,
    response: Response,
    state: Annotated[ApiState, Depends(get_state)],
) -> JobOut:
    """Run a registered trainer on the ``train`` queue; an unknown name fails the job with the
    list of available trainers."""
    from workers.client import submit_train

    try:
        params = confine_train_params(state.settings, body.params)
    except JobPathError as exc:
        raise _path_error(exc) from None
    job = submit_train(state.settings, body.trainer, params)
    return _accepted(job, response)


@_creates_job("/jobs/retrain", responses=error_responses(400, *AUTH, 422, *LIMITS, 503))
def create_retrain_job(
    body: RetrainJobRequest,
    response: Response,
    state: Annotated[ApiState, Depends(get_state)],
) -> JobOut:
    """Retrain the encoder serving ``alias`` and promote the candidate only if it beats the
    current one on ``eval_set``: train -> evaluate -> reindex -> promote, each stage in the job
    record (``GET /jobs/{id}``) with both scores, the decision and why."""
    from workers.client import submit_retrain

    fields = body.model_dump()
    try:
        fields["params"] = confine_train_params(state.settings, body.params)
        fields["eval_set"] = confine_input(state.settings, body.eval_set, ("eval_set",))
        if body.corpus is not None:
            fields["corpus"] = confine_input(state.settings, body.corpus, ("corpus",))
        if body.current_encoder is not None:
            checked = confine_train_params(state.settings, {"from": body.current_encoder})
            fields["current_encoder"] = checked["from"]
    except JobPathError as exc:
        raise _path_error(exc) from None
    resources = _embedded_resources(state)
    try:
        job = submit_retrain(state.settings, fields, **resources)
    except ValueError as exc:
        raise field_error(["body"], str(exc)) from None
    return _accepted(job, response)


@router.get(
    "/jobs",
    response_model=JobsOut,
    responses=error_responses(*AUTH, 422, *LIMITS),
    dependencies=[_only_query("limit")],
)
def list_jobs(
    request: Request,
    state: Annotated[ApiState, Depends(get_state)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> JobsOut:
    """The newest jobs first."""
    jobs = _job_store(request, state).list(limit)
    return JobsOut(jobs=[JobOut.model_validate(j.to_dict()) for j in jobs])


@router.get(
    "/jobs/{job_id}",
    response_model=JobOut,
    responses=error_responses(*AUTH, 404, 422, *LIMITS),
    dependencies=[_only_query()],
)
def get_job(
    request: Request,
    state: Annotated[ApiState, Depends(get_state)],
    job_id: Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="job id")],
) -> JobOut:
    """State, progress (batches and documents done/total, rate, ETA), per-batch errors."""
    job = _job_store(request, state).get(job_id)
    if job is None:
        raise ApiError(404, f"no job {job_id!r}")
    return JobOut.model_validate(job.to_dict())

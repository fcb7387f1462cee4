"""Per-app runtime state, reachable from any route as ``request.app.state.ember``.

``encoder`` and ``batcher`` are the default encoder's (``EMBER_ENCODER``); ``encoders`` holds it
and every other encoder loaded for a collection it built (:mod:`search_api.served`).

Routers written outside this package (``search_api/routes/jobs.py``) read the served encoder and
store from here: in embedded mode the store's folder is locked to one process, so in-process jobs
must share this ``store`` instead of opening their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

from fastapi import Request

from search_api.errors import ApiError

if TYPE_CHECKING:
    from encoders import Encoder
    from indexer.store import Store
    from search_api.batcher import MicroBatcher
    from search_api.metrics import Metrics
    from search_api.served import EncoderRegistry
    from search_api.settings import ApiSettings


Status = Literal["starting", "ready", "failed"]
T = TypeVar("T")


@dataclass
class ApiState:
    settings: ApiSettings
    metrics: Metrics
    encoder: Encoder | None = None
    store: Store | None = None
    batcher: MicroBatcher | None = None
    # every encoder served, by fingerprint: ``encoder``/``batcher`` above (EMBER_ENCODER, the
    # default for new collections and /v1/embeddings) and those of collections built by others
    encoders: EncoderRegistry | None = None
    status: Status = "starting"
    error: str | None = None

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    # What a request handler uses once ``ready_state`` let it in: each is set at start-up, but
    # a shutdown may clear the store under a request still running; that answers 503, never an
    # AssertionError.
    @property
    def live_store(self) -> Store:
        return _present(self.store, "the store is closed")

    @property
    def live_encoders(self) -> EncoderRegistry:
        return _present(self.encoders, "no encoder is loaded")

    @property
    def live_encoder(self) -> Encoder:
        return _present(self.encoder, "no encoder is loaded")

    @property
    def live_batcher(self) -> MicroBatcher:
        return _present(self.batcher, "no encoder is loaded")


def _present(value: T | None, why: str) -> T:
    if value is None:
        raise ApiError(503, f"service unavailable: {why}", headers={"retry-after": "5"})
    return value


def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.ember
    return state


def ready_state(request: Request) -> ApiState:
    """The state, or 503 while the encoder is still loading (or failed to load)."""
    state = get_state(request)
    if not state.ready:
        reason = "the encoder is warming up" if state.status == "starting" else "not ready"
        raise ApiError(503, f"service unavailable: {reason}", headers={"retry-after": "5"})
    return state

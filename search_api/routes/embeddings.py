"""POST /v1/embeddings, OpenAI-compatible.

Inputs are embedded as they are: no instruction, document max length (OpenAI has no notion of
query vs document). To get a query vector for a task, prepend the task's instruction from
GET /tasks yourself, or search with POST /search. Texts longer than the encoder's ``max_length``
tokens are truncated; ``usage.prompt_tokens`` counts the tokens actually encoded.

``model`` is accepted and ignored (one encoder per process, as text-embeddings-inference does):
clients written for OpenAI may send their own model name; the response names the served encoder.
"""

from __future__ import annotations

import base64
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from encoders.vectors import l2_normalize
from search_api.errors import field_error
from search_api.routes import AUTH, LIMITS, error_responses
from search_api.schemas import Embedding, EmbeddingsRequest, EmbeddingsResponse, Usage
from search_api.security import require_api_key
from search_api.state import ApiState, ready_state

router = APIRouter()


def truncate(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """Keep the first ``dimensions`` components and L2-normalise again (Matryoshka-style)."""
    return l2_normalize(np.ascontiguousarray(vectors[:, :dimensions], dtype=np.float32))


def to_base64(vector: np.ndarray) -> str:
    """Little-endian float32 bytes, base64 (what OpenAI returns for encoding_format=base64)."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


@router.post(
    "/v1/embeddings",
    response_model=EmbeddingsResponse,
    dependencies=[Depends(require_api_key)],
    responses=error_responses(400, *AUTH, *LIMITS, 422, 503),
    tags=["embeddings"],
)
async def embeddings(
    req: EmbeddingsRequest, state: Annotated[ApiState, Depends(ready_state)]
) -> EmbeddingsResponse:
    """Embed one text or a list of texts (instruction-free, L2-normalised float32)."""
    encoder, batcher = state.live_encoder, state.live_batcher
    texts = [req.input] if isinstance(req.input, str) else list(req.input)
    limit = state.settings.api_max_inputs
    if len(texts) > limit:
        raise field_error(["body", "input"], f"at most {limit} inputs per call, got {len(texts)}")
    dim = encoder.dim
    if req.dimensions is not None and req.dimensions > dim:
        raise field_error(
            ["body", "dimensions"],
            f"dimensions must be <= {dim} for this model, got {req.dimensions}",
        )
    items = await run_in_threadpool(encoder.tokenize, texts, None, encoder.config.max_length)
    for i, item in enumerate(items):
        if not item.ids:
            loc: list[str | int] = ["body", "input"] + (
                [i] if not isinstance(req.input, str) else []
            )
            raise field_error(loc, "the text has no tokens to encode")
    tokens = sum(len(item.ids) for item in items)

    vectors = (await batcher.encode(texts, "document", None))["dense"]
    if req.dimensions is not None and req.dimensions < vectors.shape[1]:
        vectors = truncate(vectors, req.dimensions)
    data = [
        Embedding(
            index=i,
            embedding=to_base64(v) if req.encoding_format == "base64" else v.tolist(),
        )
        for i, v in enumerate(vectors)
    ]
    return EmbeddingsResponse(
        data=data, model=encoder.config.name, usage=Usage(prompt_tokens=tokens, total_tokens=tokens)
    )

"""``POST /search``: the request (query, task or instruction, filter, paging, fusion) and
the ranked hits."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from encoders.instructions import TASKS
from indexer.groups import DOC_ID, MAX_OFFSET
from search_api.schemas.fields import (
    COLLECTION_PATTERN,
    AcceptIntegralFloat,
    FieldName,
    FilterCondition,
    NonBlank,
    Range,
    Text,
    _field_names_schema,
)


class FusionParams(BaseModel):
    """Overrides of the collection's fusion for ``mode: hybrid`` (unset: the stored value)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    method: Literal["rrf", "dbsf", "weighted"] | None = Field(
        None, description="rrf (reciprocal rank), dbsf (score distribution) or weighted"
    )
    k: Annotated[int, Field(ge=1, le=10_000), AcceptIntegralFloat] | None = Field(
        None, description="rrf: the k in 1 / (k + rank)"
    )
    weight: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] | None = Field(
        None, description="weighted: share of the dense cosine (the rest: squashed BM25)"
    )
    scale: Annotated[float, Field(gt=0.0, le=1e6, allow_inf_nan=False)] | None = Field(
        None, description="weighted: c in the BM25 squash s / (s + c)"
    )
    prefetch: Annotated[int, Field(ge=1, le=1000), AcceptIntegralFloat] | None = Field(
        None, description="candidates per prefetch (dense and sparse)"
    )


class SearchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            # task and instruction exclude each other (null counts as absent)
            "not": {
                "required": ["task", "instruction"],
                "properties": {"task": {"type": "string"}, "instruction": {"type": "string"}},
            },
            "examples": [
                {"query": "vitamin d and infections", "task": "scifact", "top_k": 5},
                {
                    "query": "vitamin d and infections",
                    "instruction": "Retrieve abstracts that answer the question:",
                    "filter": {"source": "pubmed", "year": {"gte": 2000}},
                    "collection": "default",
                },
            ],
        },
    )

    query: NonBlank = Field(description="the search query (the instruction is prepended to it)")
    task: str | None = Field(
        None,
        description="task name from GET /tasks; its instruction is prepended to the query",
        json_schema_extra={"enum": [*sorted(TASKS), None]},
    )
    instruction: Text | None = Field(
        None,
        description="a custom instruction instead of a task; '' searches without instruction",
    )
    top_k: Annotated[int, Field(ge=1, le=100), AcceptIntegralFloat] = Field(
        10, description="number of hits (documents, or chunks with group_by null)"
    )
    offset: Annotated[int, Field(ge=0, le=MAX_OFFSET), AcceptIntegralFloat] = Field(
        0,
        description=(
            "hits to skip: the next page starts at offset + top_k, exactly after this page's "
            "last hit (ties ranked by id)"
        ),
    )
    group_by: Literal["doc_id"] | None = Field(
        DOC_ID,
        description=(
            "doc_id: one hit per document, scored by its best chunk, with its best chunks as "
            "passages; null: one hit per chunk"
        ),
    )
    filter: dict[FieldName, FilterCondition] | None = Field(
        None,
        description=(
            "payload conditions, ANDed: {field: value} exact, {field: [v1, v2]} any of, "
            "{field: {gte: x, lt: y}} range"
        ),
        json_schema_extra=_field_names_schema,
    )
    collection: Annotated[str, StringConstraints(pattern=COLLECTION_PATTERN)] | None = Field(
        None, description="collection or alias; default: the server's default collection"
    )
    mode: Literal["dense", "sparse", "hybrid"] | None = Field(
        None,
        description=(
            "dense (cosine), sparse (Qdrant BM25) or hybrid (both, fused by Qdrant); default: "
            "the server's mode (EMBER_SEARCH_MODE), dense for collections without BM25 vectors"
        ),
    )
    fusion: FusionParams | None = Field(None, description="hybrid: fusion overrides")

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str | None) -> str | None:
        if task is not None and task not in TASKS:
            raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}")
        return task

    @field_validator("instruction")
    @classmethod
    def _not_both(cls, instruction: str | None, info: Any) -> str | None:
        if instruction is not None and info.data.get("task") is not None:
            raise ValueError("give either task or instruction, not both")
        return instruction

    def filter_dict(self) -> dict[str, Any] | None:
        if not self.filter:
            return None
        return {
            k: v.model_dump(exclude_none=True) if isinstance(v, Range) else v
            for k, v in self.filter.items()
        }


class Passage(BaseModel):
    id: str = Field(description="the chunk's point id")
    chunk: int | None = Field(description="the chunk's index in its document")
    text: str | None
    score: float


class SearchHit(BaseModel):
    id: str = Field(description="the point id (of the document's best chunk when grouped)")
    score: float
    payload: dict[str, Any] = Field(description="the (best) chunk's payload")
    passages: list[Passage] = Field(
        default_factory=list,
        description="grouped hits: the document's best matching chunks, best first (up to 3)",
    )


class SearchResponse(BaseModel):
    collection: str = Field(description="the collection that answered (an alias is resolved)")
    task: str | None
    instruction: str | None = Field(description="the instruction prepended to the query")
    mode: str = Field("dense", description="the search mode that answered")
    group_by: str | None = Field(None, description="doc_id: document hits; null: chunk hits")
    offset: int = Field(0, description="hits skipped before the first one returned")
    encoder: str | None = Field(None, description="name of the encoder that answered")
    fingerprint: str | None = Field(
        None,
        description="fingerprint of the encoder that answered: the one in the collection's "
        "versioned name <name>__<fingerprint>__v<N>",
    )
    hits: list[SearchHit]

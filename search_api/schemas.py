"""Request and response models (they are the OpenAPI spec: keep constraints here, not in routes)."""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from encoders.instructions import TASKS
from indexer.groups import DOC_ID, MAX_OFFSET

# names the store accepts (indexer.store.check_name); also keeps odd strings away from disk paths
COLLECTION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$"


def _integral(value: Any) -> Any:
    """JSON Schema counts 1.0 as an integer: accept it (strict mode would not)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # Qdrant payload integers


def lone_surrogate(value: Any, where: str = "") -> str | None:
    """Where in ``value`` (a JSON value) a string holds a lone surrogate (JSON allows
    ``"\ud800"``, but it is no unicode text: tokenizers, Qdrant and UTF-8 refuse it), or None.
    Returns ``where`` extended by the keys/indices leading to it."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        inner = f"{where}.{key}" if where else str(key)
        if isinstance(key, str) and lone_surrogate(key) is not None:
            return inner
        found = lone_surrogate(item, inner)
        if found is not None:
            return found
    return None


def _valid_unicode(value: Any) -> Any:
    """Refuse strings (anywhere in a JSON value) with a lone surrogate: 422, not a 500."""
    found = lone_surrogate(value)
    if found is not None:
        # the path may hold the surrogate itself (a key): written escaped
        at = f" (at {found.encode('utf-8', 'backslashreplace').decode()})" if found else ""
        raise ValueError(f"text is not valid unicode: a lone surrogate{at}")
    return value


def _visible(value: str) -> str:
    """Refuse text with nothing to embed: only whitespace and control or format characters
    (NUL, zero-width marks). A tokenizer would turn it into special tokens alone, so the
    vector would say nothing about the text (and /search and /v1/embeddings agree on it)."""
    if not any(not ch.isspace() and unicodedata.category(ch)[0] != "C" for ch in value):
        raise ValueError(
            "text has no visible characters (only whitespace or control characters such as NUL)"
        )
    return value


def _filter_condition(value: Any) -> Any:
    """A filter value Qdrant can hold (integers in 64 bits, valid unicode), checked before the
    union of condition kinds: else an integer beyond int64 would pass as a float."""
    for n, item in enumerate(value if isinstance(value, list) else [value]):
        at = f" (at {n})" if isinstance(value, list) else ""
        whole = isinstance(item, int) and not isinstance(item, bool)
        if whole and not INT64_MIN <= item <= INT64_MAX:
            raise ValueError(
                f"integer out of range{at}: filter integers must fit in 64 bits ({INT64_MIN} .. "
                f"{INT64_MAX})"
            )
        if isinstance(item, str) and lone_surrogate(item) is not None:
            raise ValueError(f"text is not valid unicode{at}: a lone surrogate")
    return value


# Request models are strict: no "10" for 10, no false for 0 (the spec says what is accepted).
# Constraints go before the validator, so the schema keeps minimum/maximum.
AcceptIntegralFloat = BeforeValidator(_integral)
ValidUnicode = AfterValidator(_valid_unicode)
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
Text = Annotated[str, ValidUnicode]
Scalar = str | Int64 | FiniteFloat | bool  # bool before int would not matter: pydantic smart mode
# what the schema says of a text to embed; NonBlank also refuses what has no visible character
TextInput = Annotated[str, Field(min_length=1, json_schema_extra={"pattern": r"\S"})]
NonBlank = Annotated[TextInput, ValidUnicode, AfterValidator(_visible)]
# payload field paths Qdrant accepts: dot-separated names (``meta.lang`` for nested fields)
FieldName = Annotated[
    str, StringConstraints(max_length=200, pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
]


class Range(BaseModel):
    """Numeric range condition; at least one bound."""

    model_config = ConfigDict(extra="forbid", strict=True)

    gt: FiniteFloat | None = None
    gte: FiniteFloat | None = None
    lt: FiniteFloat | None = None
    lte: FiniteFloat | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Range:
        if all(v is None for v in (self.gt, self.gte, self.lt, self.lte)):
            raise ValueError("a range needs at least one of gt, gte, lt, lte")
        return self


FilterCondition = Annotated[
    Scalar | Annotated[list[Scalar], Field(min_length=1)] | Range,
    BeforeValidator(_filter_condition),
]


def _field_names_schema(schema: dict[str, Any]) -> None:
    """pydantic writes key constraints as ``patternProperties`` (other keys stay allowed); say
    what is validated instead: every key matches (``propertyNames``), every value is a
    condition (``additionalProperties``)."""
    for member in schema.get("anyOf", []):
        patterns = member.pop("patternProperties", None)
        if patterns:
            (pattern, value), *_ = patterns.items()
            names = member.setdefault("propertyNames", {})
            names["pattern"] = pattern
            member["additionalProperties"] = value


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


class TaskInfo(BaseModel):
    name: str
    instruction: str


class TasksResponse(BaseModel):
    default: str
    tasks: list[TaskInfo]


class CollectionOut(BaseModel):
    name: str
    aliases: list[str]
    points: int
    vectors: dict[str, int]
    sparse: list[str] = Field(
        default_factory=list, description="sparse (BM25) vectors; empty: dense search only"
    )
    encoder_fingerprint: str | None = Field(description="encoder that built it (versioned names)")
    complete: bool = Field(
        default=True, description="false: a build still being written (or abandoned); not served"
    )
    encoder: str | None = Field(None, description="name of that encoder, where known")
    encoder_loaded: bool = Field(False, description="that encoder is loaded in this server")
    searchable: bool = Field(
        description="this server serves its encoder or may load it (a spec the build records, "
        "inside the allowed roots)"
    )


class CollectionsResponse(BaseModel):
    default: str
    collections: list[CollectionOut]


class ServedEncoder(BaseModel):
    name: str
    fingerprint: str
    default: bool = Field(description="EMBER_ENCODER: new collections and /v1/embeddings")
    serves: list[str] = Field(
        default_factory=list, description="aliases (or unaliased collections) of its builds"
    )


class HealthResponse(BaseModel):
    status: Literal["ready", "starting", "failed"]
    encoder: str | None = Field(default=None, description="the default encoder (EMBER_ENCODER)")
    dim: int | None = None
    fingerprint: str | None = None
    encoders: list[ServedEncoder] | None = Field(
        default=None, description="every loaded encoder, the default first"
    )
    loading: list[str] | None = Field(
        default=None, description="fingerprints of encoders loading now"
    )
    detail: str | None = None


class EmbeddingsRequest(BaseModel):
    """OpenAI ``POST /v1/embeddings``. Inputs are embedded as-is, without any instruction (as
    documents); for instructed query vectors use ``POST /search`` or prepend the instruction."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"input": ["first text", "second text"], "encoding_format": "float"}]
        },
    )

    input: TextInput | Annotated[list[TextInput], Field(min_length=1)] = Field(
        description="a text or a list of texts (token arrays are not accepted)"
    )
    model: str | None = Field(
        None, description="ignored: the response names the served encoder (one per process)"
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="base64: little-endian float32 bytes, as OpenAI"
    )
    dimensions: Annotated[int, Field(ge=1), AcceptIntegralFloat] | None = Field(
        None, description="truncate to this many dimensions, then re-normalise"
    )
    user: str | None = Field(None, description="accepted for compatibility, ignored")

    @field_validator("input")
    @classmethod
    def _texts(cls, value: str | list[str]) -> str | list[str]:
        # checked here rather than per union member, so an error names input (or input[i])
        # instead of pydantic's member labels
        for i, text in enumerate([value] if isinstance(value, str) else value):
            try:
                _visible(_valid_unicode(text))
            except ValueError as exc:
                raise ValueError(exc if isinstance(value, str) else f"item {i}: {exc}") from None
        return value


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    detail: str | list[ErrorItem]
    message: str | None = None

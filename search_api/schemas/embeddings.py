"""``POST /v1/embeddings``, OpenAI-compatible."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from search_api.schemas.fields import AcceptIntegralFloat, TextInput, _valid_unicode, _visible


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

"""``GET /tasks``, ``/collections``, ``/health`` and the error body every route answers with."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


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


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    detail: str | list[ErrorItem]
    message: str | None = None

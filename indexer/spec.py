"""One typed index spec: what to build, for ``ember index``, ``POST /jobs/index``, the worker
client and the worker's planner alike.

The rules live here once: a collection name is a store name without ``"__"`` (reserved for the
versions ``<name>__<fingerprint>__v<N>``), the chunk defaults (256 tokens, overlap 32), overlap
smaller than the chunk, payload index types the store knows, and chunks no longer than the
encoder reads (:meth:`IndexSpec.check_encoder`, once the encoder is known). Every path gets the
same guarantees: ``keep_versions`` honoured and the payload indexes created, by the CLI and by a
worker.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from indexer.chunking import check_chunk_fits
from indexer.store import PAYLOAD_INDEX_TYPES, check_name, check_payload_indexes

if TYPE_CHECKING:
    from encoders import Encoder

DEFAULT_CHUNK_TOKENS = 256
DEFAULT_OVERLAP = 32
MAX_CHUNK_TOKENS = 32_768

Format = Literal["auto", "jsonl", "beir", "csv", "dir"]
OnError = Literal["fail", "skip"]
# checked by indexer.store.check_payload_indexes (its message); the schema lists the types
PayloadIndexType = Annotated[str, Field(json_schema_extra={"enum": list(PAYLOAD_INDEX_TYPES)})]
# payload field paths Qdrant accepts: dot-separated names (``meta.lang`` for nested fields)
FIELD_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
_FIELD_RE = re.compile(FIELD_PATTERN)


class IndexSpec(BaseModel):
    """How to build alias ``collection`` (the corpus itself is given beside it)."""

    model_config = ConfigDict(extra="forbid")

    collection: str = Field(
        description="alias to build and serve (a new versioned collection behind it); '__' is "
        "reserved for version names",
        # the schema's view of the check below (which gives the messages)
        json_schema_extra={
            "minLength": 1, "maxLength": 200, "pattern": r"^(?!.*__)[A-Za-z0-9][A-Za-z0-9_.-]*$",
        },
    )  # fmt: skip
    format: Format = "auto"
    on_error: OnError = Field(
        default="fail", description="a bad record in a corpus path: fail the build or skip it"
    )
    chunk_tokens: int = Field(default=DEFAULT_CHUNK_TOKENS, ge=1, le=MAX_CHUNK_TOKENS)
    overlap: int = Field(default=DEFAULT_OVERLAP, ge=0, le=MAX_CHUNK_TOKENS - 1)
    keep_versions: int = Field(
        default=1, ge=0, le=100, description="older complete builds kept after the switch"
    )
    payload_indexes: dict[str, PayloadIndexType] = Field(
        default_factory=dict,
        max_length=64,
        json_schema_extra={"propertyNames": {"maxLength": 200, "pattern": FIELD_PATTERN}},
        description="extra payload indexes, field -> type (doc_id and source always get one)",
    )

    @field_validator("collection")
    @classmethod
    def _collection(cls, name: str) -> str:
        check_name(name)
        if "__" in name:
            raise ValueError(f"invalid collection name {name!r}: '__' is reserved for versions")
        return name

    @field_validator("payload_indexes")
    @classmethod
    def _indexes(cls, indexes: dict[str, str]) -> dict[str, str]:
        for field in indexes:
            if len(field) > 200 or not _FIELD_RE.match(field):
                raise ValueError(
                    f"payload index field {field!r}: use dot-separated names of letters, digits, "
                    "'_' and '-'"
                )
        return check_payload_indexes(indexes)

    @model_validator(mode="after")
    def _overlap(self) -> IndexSpec:
        if self.overlap >= self.chunk_tokens:
            raise ValueError(
                "overlap must be smaller than chunk_tokens "
                f"(got {self.overlap} >= {self.chunk_tokens})"
            )
        return self

    def check_encoder(self, encoder: Encoder) -> None:
        """Refuse chunks longer than ``encoder`` reads (the rest of each would be cut off)."""
        check_chunk_fits(encoder, self.chunk_tokens)


def spec_error(exc: Exception, names: Mapping[str, str] | None = None, whole: str = "spec") -> str:
    """One line for a spec that does not validate: ``field: reason`` of its first error.
    ``names`` maps fields to what the caller calls them (CLI options); ``whole`` names a rule
    of the whole spec (overlap against chunk_tokens), which has no field."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    first = errors()[0]
    loc = [str(p) for p in first.get("loc", ())]
    if not loc:
        where = whole
    elif names is not None:
        where = names.get(loc[0], loc[0])
    else:
        where = ".".join(loc)
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{where}: {msg}"

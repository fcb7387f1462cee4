"""Chunking: documents split into overlapping windows of the encoder's own tokens, each chunk a
point with a stable id.

Point ids are ``uuid5(NAMESPACE, "<doc id>:<chunk index>")``, so indexing the same document again
(or a redelivered batch) overwrites the same points. The chunk text is sliced from the original
text with the tokenizer's character offsets (exact, no decode round trip); what is encoded is the
title followed by the chunk (:func:`embed_text`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from indexer.readers import Document

if TYPE_CHECKING:
    from encoders import Encoder

# Fixed namespace for chunk point ids: uuid5(NAMESPACE, f"{doc_id}:{index}").
NAMESPACE = uuid.UUID("6f1d4c1e-2b7a-5e0c-9a53-3c0d8e7f4b21")


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    index: int
    text: str
    point_id: str
    payload: dict[str, Any]


def point_id(doc_id: str, index: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{doc_id}:{index}"))


# ---- chunking ---------------------------------------------------------------------------------
def _windows(n_tokens: int, size: int, overlap: int) -> Iterator[tuple[int, int]]:
    if n_tokens <= size:
        yield 0, n_tokens
        return
    step = size - overlap
    start = 0
    while True:
        end = min(start + size, n_tokens)
        yield start, end
        if end == n_tokens:
            return
        start += step


def chunk_documents(
    docs: Iterable[Document], tokenizer: Any, chunk_tokens: int = 256, overlap: int = 32
) -> Iterator[Chunk]:
    """Split each document's text into windows of ``chunk_tokens`` tokens that overlap by
    ``overlap`` tokens. Chunk text is sliced from the original text with the tokenizer's
    character offsets, so it is exact (no decode round trip). A document that fits in one window
    gives one chunk; a whitespace-only one gives none (readers reject those).
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    if not 0 <= overlap < chunk_tokens:
        raise ValueError(f"overlap must be >= 0 and < chunk_tokens ({chunk_tokens}), got {overlap}")
    for doc in docs:
        text = doc.text
        enc = tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, truncation=False
        )
        offsets = [(a, b) for a, b in enc["offset_mapping"] if b > a]
        base = {"title": doc.title, "source": doc.source, **doc.metadata}
        if not offsets:
            continue
        for index, (start, end) in enumerate(_windows(len(offsets), chunk_tokens, overlap)):
            a, b = offsets[start][0], offsets[end - 1][1]
            if len(offsets) <= chunk_tokens:  # one window: keep the whole text, spaces included
                a, b = 0, len(text)
            piece = text[a:b]
            payload = {**base, "doc_id": doc.id, "chunk_index": index, "text": piece}
            yield Chunk(doc.id, index, piece, point_id(doc.id, index), payload)


def encoder_token_limit(encoder: Encoder) -> int:
    """Text tokens the encoder reads per document (:meth:`EncoderConfig.text_tokens`)."""
    return encoder.config.text_tokens()


def check_chunk_fits(encoder: Encoder, chunk_tokens: int) -> None:
    """Refuse chunks longer than ``encoder`` reads (the rest of each would be cut off)."""
    limit = encoder_token_limit(encoder)
    if chunk_tokens > limit:
        raise ValueError(
            f"chunk_tokens ({chunk_tokens}) is more than the encoder reads ({limit} tokens): "
            "the rest of every chunk would be cut off"
        )


def embed_text(chunk: Chunk) -> str:
    """What is encoded for a chunk: its title (context for every chunk) then its text."""
    title = str(chunk.payload.get("title") or "")
    return f"{title}\n{chunk.text}" if title else chunk.text

"""Token chunking: windows with overlap, exact text slices, deterministic point ids."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest

from indexer.pipeline import NAMESPACE, Chunk, chunk_documents, point_id
from indexer.readers import Document

TEXT = " ".join(f"word{i}" for i in range(120))


def tokens(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_windows_overlap_and_cover_the_text(tiny: Any) -> None:
    tok = tiny.tokenizer
    n = len(tokens(tok, TEXT))
    assert n > 100  # several windows of 40
    chunks = list(chunk_documents([Document("d", TEXT)], tok, chunk_tokens=40, overlap=10))
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert len(chunks) == -(-(n - 10) // 30)  # ceil((n - overlap) / step)
    for c in chunks:
        assert c.text in TEXT  # an exact slice of the original text, never a decode
        assert len(tokens(tok, c.text)) <= 40 + 1  # re-tokenising a slice may merge one edge
    spans = locate(chunks)
    assert spans[0][0] == 0 and spans[-1][1] == len(TEXT)
    # consecutive windows overlap (share text) and leave no gap
    for (a0, a1), (b0, b1) in itertools.pairwise(spans):
        assert a0 < b0 < a1 < b1


def locate(chunks: list[Chunk]) -> list[tuple[int, int]]:
    """Character spans of consecutive chunks in TEXT (each starts after the previous start)."""
    spans, pos = [], 0
    for c in chunks:
        start = TEXT.index(c.text, pos)
        spans.append((start, start + len(c.text)))
        pos = start + 1
    return spans


def test_no_overlap_partitions_the_tokens(tiny: Any) -> None:
    tok = tiny.tokenizer
    chunks = list(chunk_documents([Document("d", TEXT)], tok, chunk_tokens=25, overlap=0))
    assert "".join(c.text for c in chunks).replace(" ", "") == TEXT.replace(" ", "")
    spans = locate(chunks)
    for (_, a1), (b0, _) in itertools.pairwise(spans):
        assert a1 <= b0 and not TEXT[a1:b0].strip()  # touching, at most whitespace between


def test_short_document_is_one_chunk_with_the_whole_text(tiny: Any) -> None:
    doc = Document("d1", "  short text  ", title="T", source="s.txt", metadata={"year": 2020})
    [chunk] = chunk_documents([doc], tiny.tokenizer, chunk_tokens=64, overlap=8)
    assert chunk.text == doc.text
    assert chunk.payload == {
        "doc_id": "d1",
        "chunk_index": 0,
        "text": doc.text,
        "title": "T",
        "source": "s.txt",
        "year": 2020,
    }


def test_point_ids_are_deterministic_uuid5(tiny: Any) -> None:
    docs = [Document("a", TEXT), Document("b", "tiny")]
    first = list(chunk_documents(docs, tiny.tokenizer, chunk_tokens=40, overlap=10))
    again = list(chunk_documents(docs, tiny.tokenizer, chunk_tokens=40, overlap=10))
    assert [c.point_id for c in first] == [c.point_id for c in again]
    assert all(isinstance(c, Chunk) for c in first)
    for c in first:
        assert c.point_id == str(uuid.uuid5(NAMESPACE, f"{c.doc_id}:{c.index}"))
    assert len({c.point_id for c in first}) == len(first)
    assert point_id("a", 0) != point_id("a", 1) != point_id("b", 0)


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (10, 10), (10, -1)])
def test_bad_window_arguments(tiny: Any, size: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        list(chunk_documents([Document("d", TEXT)], tiny.tokenizer, size, overlap))

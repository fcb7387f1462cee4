"""Versioned builds behind an alias: idempotent re-index, swaps, interrupted and failed builds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from indexer.pipeline import (
    BuildError,
    begin_build,
    chunk_documents,
    finish_build,
    index_chunks,
    index_corpus,
    parse_version,
    read_corpus,
)
from indexer.readers import BadRecordError
from indexer.search import EncoderMismatchError, search, search_batch
from indexer.store import Store
from tests.indexer.conftest import BOTH, corpus_records, write_jsonl


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "corpus.jsonl", corpus_records(20))


def ids_and_payloads(store: Store, collection: str, tiny: Any) -> list[tuple[str, Any]]:
    hits = search(store, tiny, collection, "the quick brown fox", top_k=1000)
    return sorted((h.id, h.payload) for h in hits)


def test_index_corpus_serves_under_the_alias(store: Store, tiny: Any, corpus: Path) -> None:
    report = index_corpus(corpus, "docs", tiny, store, chunk_tokens=16, overlap=4, progress=False)
    assert report.documents == 20 and report.skipped == 0
    assert report.chunks > 20  # long documents were split
    assert parse_version(report.collection) == ("docs", tiny.fingerprint, 1)
    assert store.get_alias("docs") == report.collection
    assert store.count("docs") == report.chunks
    hits = search(store, tiny, "docs", "vitamin D deficiency", top_k=5)
    assert len(hits) == 5
    assert {"doc_id", "chunk_index", "text", "title", "source", "year", "lang"} <= set(
        hits[0].payload
    )
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


@BOTH
def test_reindex_same_corpus_keeps_the_count_and_ids(store: Store, tiny: Any, corpus: Path) -> None:
    first = index_corpus(corpus, "docs", tiny, store, chunk_tokens=16, overlap=4, progress=False)
    before = ids_and_payloads(store, "docs", tiny)
    second = index_corpus(corpus, "docs", tiny, store, chunk_tokens=16, overlap=4, progress=False)
    assert second.collection != first.collection
    assert parse_version(second.collection)[2] == 2  # type: ignore[index]
    assert store.count("docs") == first.chunks == second.chunks
    assert ids_and_payloads(store, "docs", tiny) == before


def test_index_chunks_is_idempotent(store: Store, tiny: Any, corpus: Path) -> None:
    chunks = list(chunk_documents(read_corpus(corpus), tiny.tokenizer, 16, 4))
    collection = begin_build(store, "docs", tiny)
    assert index_chunks(store, collection, tiny, chunks[:10]) == 10
    assert index_chunks(store, collection, tiny, chunks) == len(chunks)
    assert index_chunks(store, collection, tiny, chunks[5:15]) == 10  # a redelivered batch
    assert store.count(collection) == len(chunks)
    finish_build(store, "docs", collection, len(chunks))
    assert store.get_alias("docs") == collection


@BOTH
def test_alias_swap_keeps_one_previous_build(store: Store, tiny: Any, corpus: Path) -> None:
    builds = [
        index_corpus(corpus, "docs", tiny, store, chunk_tokens=64, overlap=8, progress=False)
        for _ in range(3)
    ]
    names = {c.name for c in store.list_collections()}
    assert names == {builds[1].collection, builds[2].collection}  # v1 pruned, v2 kept
    assert store.get_alias("docs") == builds[2].collection
    store.switch_alias("docs", builds[1].collection)  # rollback is one switch
    assert store.count("docs") == builds[1].chunks


class Exploding:
    """Wraps an encoder and fails on the n-th document batch (an interrupted build)."""

    def __init__(self, inner: Any, fail_at: int, exc: BaseException) -> None:
        self.inner, self.fail_at, self.exc, self.calls = inner, fail_at, exc, 0
        self.tokenizer, self.fingerprint, self.dim = inner.tokenizer, inner.fingerprint, inner.dim
        self.build_info, self.vector_dims = inner.build_info, inner.vector_dims
        self.config = inner.config

    def encode_named(self, texts: list[str], **kw: Any) -> dict[str, np.ndarray]:
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.exc
        return dict(self.inner.encode_named(texts, **kw))


@BOTH
@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_interrupted_build_leaves_the_served_alias_untouched(
    store: Store, tiny: Any, corpus: Path, exc: BaseException
) -> None:
    served = index_corpus(corpus, "docs", tiny, store, chunk_tokens=64, overlap=8, progress=False)
    before = ids_and_payloads(store, "docs", tiny)
    # a changed corpus whose rebuild dies half-way
    changed = write_jsonl(corpus.with_name("changed.jsonl"), corpus_records(30))
    with pytest.raises(type(exc)):
        index_corpus(
            changed, "docs", Exploding(tiny, 3, exc), store, chunk_tokens=64, overlap=8,
            batch_size=4, progress=False,
        )  # fmt: skip
    assert store.get_alias("docs") == served.collection
    assert store.count("docs") == served.chunks
    assert ids_and_payloads(store, "docs", tiny) == before
    # the partial build was removed
    assert [c.name for c in store.list_collections()] == [served.collection]


@BOTH
def test_bad_record_fails_before_anything_is_written(store: Store, tiny: Any, corpus: Path) -> None:
    served = index_corpus(corpus, "docs", tiny, store, chunk_tokens=16, overlap=4, progress=False)
    bad = write_jsonl(corpus.with_name("bad.jsonl"), [*corpus_records(5), '{"id": "x"}'])
    with pytest.raises(BadRecordError, match=r"bad\.jsonl:6: .*'text' is missing"):
        index_corpus(bad, "docs", tiny, store, progress=False)
    assert [c.name for c in store.list_collections()] == [served.collection]
    assert store.get_alias("docs") == served.collection


def test_skip_mode_indexes_the_good_records(
    store: Store, tiny: Any, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write_jsonl(corpus.with_name("bad.jsonl"), [*corpus_records(5), "{oops", '{"id": 1}'])
    report = index_corpus(bad, "docs", tiny, store, on_error="skip", progress=False)
    assert (report.documents, report.skipped) == (5, 2)
    assert {h.payload["doc_id"] for h in search(store, tiny, "docs", "fox", top_k=100)} == {
        f"d{i}" for i in range(5)
    }
    assert "bad.jsonl:6: invalid JSON" in capsys.readouterr().err


def test_finish_build_checks_the_count(store: Store, tiny: Any, corpus: Path) -> None:
    served = index_corpus(corpus, "docs", tiny, store, chunk_tokens=16, overlap=4, progress=False)
    chunks = list(chunk_documents(read_corpus(corpus), tiny.tokenizer, 16, 4))
    collection = begin_build(store, "docs", tiny)
    index_chunks(store, collection, tiny, chunks[:-3])  # a lost batch
    with pytest.raises(BuildError, match=f"expected {len(chunks)}"):
        finish_build(store, "docs", collection, len(chunks))
    assert store.get_alias("docs") == served.collection


def test_an_older_build_cannot_replace_a_newer_one(store: Store, tiny: Any, corpus: Path) -> None:
    chunks = list(chunk_documents(read_corpus(corpus), tiny.tokenizer, 64, 8))
    old = begin_build(store, "docs", tiny)
    new = begin_build(store, "docs", tiny)
    for c in (old, new):
        index_chunks(store, c, tiny, chunks)
    finish_build(store, "docs", new, len(chunks))
    with pytest.raises(BuildError, match="newer build"):
        finish_build(store, "docs", old, len(chunks))
    assert store.get_alias("docs") == new


def test_empty_corpus_and_bad_names(store: Store, tiny: Any, tmp_path: Path) -> None:
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(ValueError, match="no documents"):
        index_corpus(empty, "docs", tiny, store, progress=False)
    with pytest.raises(ValueError, match="reserved"):
        begin_build(store, "a__b", tiny)
    assert store.list_collections() == []


def test_search_applies_the_instruction_to_queries_only(
    store: Store, tiny: Any, corpus: Path
) -> None:
    index_corpus(corpus, "docs", tiny, store, chunk_tokens=16, overlap=4, progress=False)
    instruction = "Given a claim, retrieve documents that support or refute the claim:"
    [hit] = search(store, tiny, "docs", "fox", instruction=instruction, top_k=1)
    query = tiny.encode_queries(["fox"], instruction)[0]
    doc_text = (hit.payload["title"] + "\n" + hit.payload["text"]).strip()
    doc = tiny.encode_documents([doc_text])[0]  # documents: no instruction
    assert hit.score == pytest.approx(float(query @ doc), abs=1e-4)
    plain = search(store, tiny, "docs", "fox", top_k=1)[0]
    assert plain.score != pytest.approx(hit.score, abs=1e-6)  # the instruction changed the query


@BOTH
def test_search_batch_and_filters(store: Store, tiny: Any, corpus: Path) -> None:
    index_corpus(corpus, "docs", tiny, store, chunk_tokens=16, overlap=4, progress=False)
    queries = ["fox", "vitamin", "embeddings"]
    batch = search_batch(store, tiny, "docs", queries, top_k=3, filter={"lang": "en"})
    assert [[h.id for h in r] for r in batch] == [
        [h.id for h in search(store, tiny, "docs", q, top_k=3, filter={"lang": "en"})]
        for q in queries
    ]
    assert all(h.payload["lang"] == "en" for r in batch for h in r)
    ranged = search(store, tiny, "docs", "fox", top_k=100, filter={"year": {"gte": 2015}})
    assert {h.payload["doc_id"] for h in ranged} == {f"d{i}" for i in range(15, 20)}
    with pytest.raises(ValueError, match="query 1"):
        search_batch(store, tiny, "docs", ["ok", "  "])


def test_search_with_another_encoder_is_refused(
    store: Store, tiny: Any, corpus: Path, tmp_path: Path
) -> None:
    from encoders.testing import tiny_encoder

    index_corpus(corpus, "docs", tiny, store, chunk_tokens=16, overlap=4, progress=False)
    other = tiny_encoder(tmp_path / "other", "qwen2")
    with pytest.raises(EncoderMismatchError, match=tiny.fingerprint):
        search(store, other, "docs", "fox")


def test_builds_get_payload_indexes_on_edge(tmp_path: Path, tiny: Any, corpus: Path) -> None:
    from indexer.edge_store import EdgeStore

    with EdgeStore(tmp_path / "edge") as store:
        report = index_corpus(
            corpus, "docs", tiny, store, progress=False, payload_indexes={"year": "integer"}
        )
        shard = store._shard(report.collection)  # the engine's own view of its indexes
        assert set(shard.info().payload_schema) == {"doc_id", "source", "year"}
        hits = search(store, tiny, "docs", "fox", top_k=100, filter={"year": {"lt": 2003}})
        assert {h.payload["doc_id"] for h in hits} == {"d0", "d1", "d2"}
        with pytest.raises(ValueError, match="payload index 'year'"):
            begin_build(store, "docs", tiny, {"year": "number"})


def test_chunks_longer_than_the_encoder_reads_are_refused(
    store: Store, tiny: Any, corpus: Path
) -> None:
    limit = tiny.config.max_length
    with pytest.raises(ValueError, match=f"more than the encoder reads \\({limit} tokens\\)"):
        index_corpus(corpus, "docs", tiny, store, chunk_tokens=limit + 1, progress=False)
    assert store.list_collections() == []


@BOTH
def test_a_build_records_the_dtype_it_was_encoded_in(store: Store, tiny: Any, corpus: Path) -> None:
    report = index_corpus(corpus, "docs", tiny, store, chunk_tokens=16, overlap=4, progress=False)
    build = store.collection_meta("docs")["build"]
    assert build == tiny.build_info()
    assert build["dtype"] == "float32" and build["fingerprint"] in report.collection
    store.update_collection_meta("docs", {"fusion": {"kind": "dbsf"}})  # later meta merges
    assert store.collection_meta("docs")["build"] == build

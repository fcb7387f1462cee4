"""The index pipeline: read a corpus, chunk it by tokens, encode, upsert, swap the alias.

A build never touches what is being served: it writes a fresh versioned collection
``<name>__<encoder fingerprint>__v<N>``, checks that the collection holds exactly the expected
number of points, marks it complete, and only then moves the alias ``<name>`` onto it
(atomically). A build that fails or is interrupted leaves the alias and its collection untouched.

A build is marked unfinished from the moment its collection exists (:mod:`indexer.builds`): an
unfinished build is never served, searched, listed as searchable or kept as a rollback version,
and the next build of the same name deletes it once its builder is gone (a ``kill -9``, a lost
host) while leaving a build that another live process is still writing alone.

The same three steps (:func:`begin_build`, :func:`index_chunks`, :func:`finish_build`) are used by
the CLI (``ember index`` through :func:`index_documents`; ``ember demo`` and the benchmarks through
:func:`index_corpus`, which reads the corpus first) and by the workers (one chunk task per batch,
the alias switch in the chord callback). :func:`index_chunks` is idempotent: point ids are
``uuid5(NAMESPACE, "<doc id>:<chunk index>")`` (:mod:`indexer.chunking`), so a redelivered batch
overwrites the same points.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from encoders.errors import EmberError
from indexer import builds, sources
from indexer.chunking import (
    NAMESPACE,
    Chunk,
    check_chunk_fits,
    chunk_documents,
    embed_text,
    encoder_token_limit,
    point_id,
)
from indexer.readers import Document, read_corpus
from indexer.sparse import SPARSE_VECTOR, embed_documents
from indexer.store import (
    BUILD_META_KEY,
    SOURCE_META_KEY,
    CollectionExistsError,
    CollectionInfo,
    Point,
    Store,
    check_name,
    check_payload_indexes,
)

if TYPE_CHECKING:
    from encoders import Encoder

__all__ = [
    "NAMESPACE",
    "Chunk",
    "Document",
    "IndexReport",
    "begin_build",
    "chunk_documents",
    "embed_text",
    "encoder_token_limit",
    "finish_build",
    "index_chunks",
    "index_corpus",
    "index_documents",
    "point_id",
    "prune_versions",
    "read_corpus",
]

log = logging.getLogger(__name__)

DEFAULT_PAYLOAD_INDEXES = {"doc_id": "keyword", "source": "keyword"}
BUILD_INFO_KEY = "build"  # collection meta: how the build's vectors were made (Encoder.build_info)
_VERSION_RE = re.compile(r"^(?P<name>.+?)__(?P<fp>[0-9a-zA-Z]+)__v(?P<n>\d+)$")


class BuildError(EmberError, RuntimeError):
    """A build could not be finished (count mismatch, stale version); the alias is untouched."""


@dataclass(frozen=True)
class IndexReport:
    collection: str
    documents: int
    chunks: int
    skipped: int
    seconds: float
    alias: str = ""
    errors: list[str] = field(default_factory=list)


# ---- builds -----------------------------------------------------------------------------------
def parse_version(collection: str) -> tuple[str, str, int] | None:
    """``(name, fingerprint, N)`` of a versioned collection name, or None."""
    m = _VERSION_RE.match(collection)
    return (m["name"], m["fp"], int(m["n"])) if m else None


def _versions(infos: Sequence[CollectionInfo], name: str) -> list[tuple[int, CollectionInfo]]:
    out = []
    for info in infos:
        parsed = parse_version(info.name)
        if parsed and parsed[0] == name:
            out.append((parsed[2], info))
    return sorted(out, key=lambda v: v[0])


def versions(store: Store, name: str, *, complete_only: bool = False) -> list[tuple[int, str]]:
    """``(N, collection)`` for every versioned collection of ``name``, oldest first (only the
    finished builds with ``complete_only``)."""
    found = _versions(store.list_collections(), name)
    return [(n, info.name) for n, info in found if info.complete or not complete_only]


def begin_build(
    store: Store,
    name: str,
    encoder: Encoder,
    payload_indexes: dict[str, str] | None = None,
    *,
    job: str | None = None,
    job_alive: builds.JobAlive | None = None,
    source: dict[str, Any] | None = None,
) -> str:
    """Create the next version ``<name>__<fingerprint>__v<N>`` (empty, marked unfinished) and
    return its name, after deleting the stale unfinished builds of ``name``
    (:func:`indexer.builds.remove_stale_builds`).

    ``job``: the broker job the build belongs to (its batches may run in other processes);
    ``job_alive``: tells whether such a job still runs (the stale rule of job-owned builds).
    ``source``: what the build is made of (:func:`indexer.sources.source_record`), written with
    the collection.
    ``doc_id`` and ``source`` get keyword payload indexes (plus ``payload_indexes``: field ->
    keyword | integer | float | bool | datetime | text | uuid) so filters on them stay fast on
    engines that use payload indexes (server, edge)."""
    check_name(name)
    indexes = check_payload_indexes({**DEFAULT_PAYLOAD_INDEXES, **(payload_indexes or {})})
    if "__" in name:
        raise ValueError(f"invalid collection name {name!r}: '__' is reserved for versions")
    existing = _versions(store.list_collections(), name)
    n = existing[-1][0] + 1 if existing else 1  # never reuses the number of a deleted build
    builds.remove_stale_builds(
        store, {info.name: info.complete for _, info in existing}, job_alive=job_alive
    )
    while True:
        collection = f"{name}__{encoder.fingerprint}__v{n}"
        try:
            store.create_collection(
                collection, dict(encoder.vector_dims), indexes, sparse=(SPARSE_VECTOR,),
                meta={
                    BUILD_META_KEY: builds.owner_record(job),
                    BUILD_INFO_KEY: encoder.build_info(),
                    **({SOURCE_META_KEY: source} if source is not None else {}),
                },
            )  # fmt: skip
        except CollectionExistsError:  # lost a race with a concurrent begin_build: next number
            n += 1
            continue
        builds.started(collection)
        return collection


def index_chunks(store: Store, collection: str, encoder: Encoder, chunks: Sequence[Chunk]) -> int:
    """Encode ``chunks`` (documents: no instruction) and upsert them with their BM25 sparse
    vectors; returns how many. Idempotent: the same chunks give the same ids and vectors."""
    if not chunks:
        return 0
    texts = [embed_text(c) for c in chunks]
    # documents: no instruction; the encoder's declared named vectors (MoEE sum: hs + rw)
    vectors = encoder.encode_named(texts)
    sparse = embed_documents(texts)
    points = [
        Point(
            id=c.point_id,
            vectors={n: v[i] for n, v in vectors.items()},
            payload=c.payload,
            sparse={SPARSE_VECTOR: sparse[i]},
        )
        for i, c in enumerate(chunks)
    ]
    store.upsert(collection, points)
    builds.heartbeat(store, collection)
    return len(points)


def finish_build(store: Store, name: str, collection: str, expected_points: int) -> None:
    """Check the build holds ``expected_points`` points, mark it complete, then point alias
    ``name`` at it.

    Raises :class:`BuildError` (alias untouched, build still unfinished) when the count differs
    or when the alias already serves a newer version of ``name`` (a slower, older build must
    not win).
    """
    builds.pause_point("upserted", collection)
    store.optimize(collection)
    count = store.count(collection)
    if count != expected_points:
        raise BuildError(
            f"build {collection} holds {count} points, expected {expected_points}; "
            f"alias {name!r} not switched"
        )
    current = store.get_alias(name)
    new = parse_version(collection)
    old = parse_version(current) if current else None
    if new and old and old[0] == new[0] and old[2] > new[2]:
        raise BuildError(
            f"alias {name!r} already serves newer build {current}; {collection} not switched in"
        )
    builds.mark_complete(store, collection)
    builds.pause_point("completed", collection)
    store.switch_alias(name, collection)


def prune_versions(store: Store, name: str, keep: int = 1) -> list[str]:
    """Delete finished versions of ``name`` older than the served one, keeping the ``keep``
    newest of them for rollback. Unfinished builds never count as rollback versions and are
    left to the stale rule (:func:`begin_build`); newer unserved versions (builds in progress
    elsewhere) are left alone."""
    served = store.get_alias(name)
    parsed = parse_version(served) if served else None
    if parsed is None:
        return []
    older = [c for n, c in versions(store, name, complete_only=True) if n < parsed[2]]
    doomed = older[: max(0, len(older) - keep)]
    for collection in doomed:
        store.delete_collection(collection)
    return doomed


def index_corpus(
    path: str | Path,
    name: str,
    encoder: Encoder,
    store: Store,
    *,
    fmt: str = "auto",
    chunk_tokens: int = 256,
    overlap: int = 32,
    batch_size: int = 64,
    on_error: str = "fail",
    progress: bool = True,
    keep_versions: int = 1,
    payload_indexes: dict[str, str] | None = None,
    encoder_spec: str | None = None,
) -> IndexReport:
    """Index a corpus into a new version of ``name`` and serve it under alias ``name``.

    ``encoder_spec``: the spec ``encoder`` was loaded from; given, the build records its source
    (encoder spec, corpus path, chunking: :mod:`indexer.sources`) so a retrain can redo it and
    the API can load its encoder.

    The whole corpus is read and chunked first, so a bad record (``on_error="fail"``) stops the
    run before a collection exists. A failure while encoding or writing deletes the partial
    build; the serving alias and its points are never touched until the final checked switch.
    """
    started = time.perf_counter()
    reader = read_corpus(path, fmt=fmt, on_error=on_error)
    docs = list(reader)
    if not docs:
        raise ValueError(f"{path}: no documents to index")
    source = None
    if encoder_spec is not None:
        corpus = {"path": str(path), "format": fmt, "on_error": on_error,
                  "chunk_tokens": chunk_tokens, "overlap": overlap}  # fmt: skip
        source = sources.source_record(None, encoder_spec, encoder.fingerprint, corpus)
    return index_documents(
        docs, name, encoder, store, chunk_tokens=chunk_tokens, overlap=overlap,
        batch_size=batch_size, progress=progress, keep_versions=keep_versions,
        skipped=[str(e) for e in reader.errors], started=started, payload_indexes=payload_indexes,
        source=source,
    )  # fmt: skip


def index_documents(
    docs: Sequence[Document],
    name: str,
    encoder: Encoder,
    store: Store,
    *,
    chunk_tokens: int = 256,
    overlap: int = 32,
    batch_size: int = 64,
    progress: bool = True,
    keep_versions: int = 1,
    skipped: Sequence[str] = (),
    started: float | None = None,
    payload_indexes: dict[str, str] | None = None,
    source: dict[str, Any] | None = None,
) -> IndexReport:
    """:func:`index_corpus` for documents already read (``skipped``: the reader's errors;
    ``source``: the build's source record, :func:`indexer.sources.source_record`)."""
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_name(name)
    started = time.perf_counter() if started is None else started
    if not docs:
        raise ValueError("no documents to index")
    check_chunk_fits(encoder, chunk_tokens)
    chunks = list(chunk_documents(docs, encoder.tokenizer, chunk_tokens, overlap))
    if not chunks:
        raise ValueError("the documents produced no text to index")

    collection = begin_build(store, name, encoder, payload_indexes, source=source)
    try:
        with tqdm(
            total=len(chunks), desc=f"index {name}", unit="chunk", disable=not progress,
            file=sys.stderr, dynamic_ncols=True,
        ) as bar:  # fmt: skip
            for i in range(0, len(chunks), batch_size):
                batch = chunks[i : i + batch_size]
                index_chunks(store, collection, encoder, batch)
                bar.update(len(batch))
                builds.pause_point(f"batch-{i // batch_size + 1}", collection)
        finish_build(store, name, collection, len(chunks))
    except BaseException:
        try:
            store.delete_collection(collection)
        except Exception:  # the original error matters more
            log.warning("could not delete partial build %s", collection, exc_info=True)
        builds.forget(collection)
        raise
    prune_versions(store, name, keep=keep_versions)
    return IndexReport(
        collection=collection,
        documents=len(docs),
        chunks=len(chunks),
        skipped=len(skipped),
        seconds=time.perf_counter() - started,
        alias=name,
        errors=list(skipped),
    )

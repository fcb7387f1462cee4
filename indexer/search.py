"""Query -> ranked hits: encode the query (instruction prepended, queries only), search the store.

Hits are chunks, or with ``group_by="doc_id"`` (:data:`indexer.groups.DOC_ID`, what the API and
the CLI ask for by default) one per document, its score its best chunk's, its best chunks
attached; ``offset`` pages through either ranking (:mod:`indexer.groups`).

A collection remembers the encoder that built it (its fingerprint is part of the versioned name),
so searching it with a different encoder - whose vectors live in another space - raises
:class:`EncoderMismatchError` instead of returning meaningless rankings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import numpy as np

from encoders.errors import EmberError
from indexer.groups import PASSAGES, check_page
from indexer.pipeline import parse_version
from indexer.sparse import (
    FUSION_META_KEY,
    SPARSE_VECTOR,
    Fusion,
    Mode,
    SparseUnavailableError,
    check_mode,
    embed_queries,
)
from indexer.store import DEFAULT_VECTOR, Hit, PageOptions, Store

if TYPE_CHECKING:
    from encoders import Encoder


# the mode used when a request names none (bench/RESULTS.md "Hybrid search": the best measured
# for the default encoder); collections without sparse vectors are searched dense
DEFAULT_MODE = "hybrid"


class EncoderMismatchError(EmberError, ValueError):
    status = 409

    pass


def check_encoder(store: Store, encoder: Encoder, collection: str) -> str:
    """Resolve ``collection`` (alias or name) and check it was built by ``encoder`` and is a
    finished build (:class:`~indexer.store.BuildIncompleteError` for a partial one)."""
    resolved = store.check_complete(store.resolve(collection))
    parsed = parse_version(resolved)
    if parsed is not None and parsed[1] != encoder.fingerprint:
        raise EncoderMismatchError(
            f"collection {collection!r} ({resolved}) was built by encoder {parsed[1]}, "
            f"but the query encoder is {encoder.fingerprint}; search with the same encoder "
            "or re-index"
        )
    return resolved


class QueryOptions(TypedDict, total=False):
    """The keyword options of :func:`search_batch` (their defaults are there)."""

    instruction: str | None
    top_k: int
    filter: dict[str, Any] | None
    using: str
    mode: str | None
    fusion: Fusion | Mapping[str, Any] | None
    offset: int
    group_by: str | None
    group_size: int


def search(
    store: Store, encoder: Encoder, collection: str, query: str, **options: Unpack[QueryOptions]
) -> list[Hit]:
    """Top ``top_k`` hits for ``query`` in ``collection`` (an alias or a collection name),
    after the first ``offset``: :func:`search_batch` for one query."""
    return search_batch(store, encoder, collection, [query], **options)[0]


def collection_fusion(store: Store, collection: str) -> Fusion:
    """The fusion stored with ``collection`` (``ember eval fit-fusion``), else the default."""
    return Fusion.from_dict(store.collection_meta(collection).get(FUSION_META_KEY))


def has_sparse(store: Store, collection: str) -> bool:
    return SPARSE_VECTOR in store.sparse_names(store.get_alias(collection) or collection)


def resolve_mode(store: Store, collection: str, mode: str | None, default: str = "dense") -> Mode:
    """The mode to search ``collection`` in: ``mode`` when given (``sparse``/``hybrid`` on a
    collection without BM25 vectors raise :class:`SparseUnavailableError`), else ``default``,
    which falls back to ``dense`` for a collection built before sparse vectors existed."""
    if mode is None:
        chosen = check_mode(default)
        return chosen if chosen == "dense" or has_sparse(store, collection) else "dense"
    chosen = check_mode(mode)
    if chosen != "dense" and not has_sparse(store, collection):
        raise SparseUnavailableError(collection, chosen)
    return chosen


def resolve_fusion(
    store: Store, collection: str, fusion: Fusion | Mapping[str, Any] | None
) -> Fusion:
    """``fusion`` itself, or the collection's stored fusion with the overrides ``fusion``."""
    if isinstance(fusion, Fusion):
        return fusion
    return collection_fusion(store, collection).override(**(fusion or {}))


def _multi_vector(encoder: Encoder) -> bool:
    return len(encoder.vector_weights) > 1  # MoEE sum: cos hs + w * cos rw


def search_prepared(
    store: Store,
    encoder: Encoder,
    collection: str,
    queries: Sequence[str],
    vectors: Mapping[str, np.ndarray] | None,
    *,
    mode: Mode,
    top_k: int = 10,
    filter: dict[str, Any] | None = None,
    fusion: Fusion | Mapping[str, Any] | None = None,
    offset: int = 0,
    group_by: str | None = None,
    group_size: int = PASSAGES,
) -> list[list[Hit]]:
    """Search a resolved ``collection`` in a resolved ``mode`` with the queries' named
    ``vectors`` already encoded (``encoder.encode_queries_named``, e.g. by the API's
    micro-batcher; None in ``sparse`` mode): the path ``/search`` and :func:`search_batch`
    share. An encoder whose score adds several named vectors (MoEE ``sum``) gets the exact
    fused search on them."""
    page: PageOptions = {
        "top_k": top_k, "filter": filter, "offset": offset, "group_by": group_by,
        "group_size": group_size,
    }  # fmt: skip
    if mode == "sparse":
        return store.search_sparse_batch(collection, embed_queries(list(queries)), **page)
    if vectors is None:
        raise ValueError(f"mode {mode!r} needs query vectors")
    if mode == "hybrid":
        if _multi_vector(encoder):
            raise ValueError(
                "mode 'hybrid' is not available for MoEE 'sum' collections (their score is "
                "re-ranked exactly over two vectors); use mode 'dense' or 'sparse'"
            )
        return store.search_hybrid_batch(
            collection, vectors[DEFAULT_VECTOR], embed_queries(list(queries)),
            fusion=resolve_fusion(store, collection, fusion), **page,
        )  # fmt: skip
    if _multi_vector(encoder):
        from indexer.fusion import fused_search_page

        return fused_search_page(store, collection, dict(vectors), encoder.vector_weights, **page)
    return store.search_batch(collection, vectors[DEFAULT_VECTOR], using=DEFAULT_VECTOR, **page)


def search_batch(
    store: Store,
    encoder: Encoder,
    collection: str,
    queries: Sequence[str],
    *,
    instruction: str | None = None,
    top_k: int = 10,
    filter: dict[str, Any] | None = None,
    using: str = DEFAULT_VECTOR,
    mode: str | None = "dense",
    fusion: Fusion | Mapping[str, Any] | None = None,
    offset: int = 0,
    group_by: str | None = None,
    group_size: int = PASSAGES,
) -> list[list[Hit]]:
    """One ranked hit list per query; the queries are encoded together in one call.

    ``mode``: ``dense`` (cosine on the encoder's vectors), ``sparse`` (the engine's BM25 on the
    collection's sparse vectors; no encoder call) or ``hybrid`` (one Query API call per query:
    dense and sparse prefetches fused by ``fusion``: a :class:`~indexer.sparse.Fusion`, or a
    mapping of overrides of the fusion stored with the collection). ``None``: hybrid where the
    collection has sparse vectors, else dense. ``sparse``/``hybrid`` on a collection built
    without sparse vectors raise :class:`~indexer.sparse.SparseUnavailableError`.

    ``group_by`` (e.g. ``"doc_id"``): one hit per distinct payload value, scored by its best
    chunk, with its best ``group_size`` chunks as ``passages``; None: chunk hits. ``offset``:
    skip that many hits (documents when grouped); pages are stable (ties broken by id)."""
    if isinstance(queries, str):
        raise TypeError("search_batch() takes a sequence of queries, not a single string")
    for i, q in enumerate(queries):
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"query {i}: must be a non-empty string")
    check_page(top_k, offset, group_size)
    if not queries:
        return []
    page: PageOptions = {
        "top_k": top_k, "filter": filter, "offset": offset, "group_by": group_by,
        "group_size": group_size,
    }  # fmt: skip
    resolved = check_encoder(store, encoder, collection)
    chosen = resolve_mode(store, resolved, mode, DEFAULT_MODE)
    if chosen == "dense" and using != DEFAULT_VECTOR:  # one named vector, by the query vector
        vectors = np.asarray(encoder.encode_queries(list(queries), instruction), dtype=np.float32)
        return store.search_batch(resolved, vectors, using=using, **page)
    named = None if chosen == "sparse" else encoder.encode_queries_named(list(queries), instruction)
    # search the resolved collection: a concurrent alias switch cannot mix two builds in a batch
    return search_prepared(
        store, encoder, resolved, queries, named, mode=chosen, fusion=fusion, **page,
    )  # fmt: skip

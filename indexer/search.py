"""Query -> ranked hits: encode the query (instruction prepended, queries only), search the store.

A collection remembers the encoder that built it (its fingerprint is part of the versioned name),
so searching it with a different encoder - whose vectors live in another space - raises
:class:`EncoderMismatchError` instead of returning meaningless rankings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from indexer.pipeline import parse_version
from indexer.store import DEFAULT_VECTOR, Hit, Store

if TYPE_CHECKING:
    from encoders import Encoder


class EncoderMismatchError(ValueError):
    pass


def check_encoder(store: Store, encoder: Encoder, collection: str) -> str:
    """Resolve ``collection`` (alias or name) and check it was built by ``encoder``."""
    resolved = store.resolve(collection)
    parsed = parse_version(resolved)
    if parsed is not None and parsed[1] != encoder.fingerprint:
        raise EncoderMismatchError(
            f"collection {collection!r} ({resolved}) was built by encoder {parsed[1]}, "
            f"but the query encoder is {encoder.fingerprint}; search with the same encoder "
            "or re-index"
        )
    return resolved


def search(
    store: Store,
    encoder: Encoder,
    collection: str,
    query: str,
    *,
    instruction: str | None = None,
    top_k: int = 10,
    filter: dict[str, Any] | None = None,
    using: str = DEFAULT_VECTOR,
) -> list[Hit]:
    """Top ``top_k`` hits for ``query`` in ``collection`` (an alias or a collection name)."""
    return search_batch(
        store, encoder, collection, [query], instruction=instruction, top_k=top_k,
        filter=filter, using=using,
    )[0]  # fmt: skip


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
) -> list[list[Hit]]:
    """One ranked hit list per query; the queries are encoded together in one call."""
    if isinstance(queries, str):
        raise TypeError("search_batch() takes a sequence of queries, not a single string")
    for i, q in enumerate(queries):
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"query {i}: must be a non-empty string")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if not queries:
        return []
    resolved = check_encoder(store, encoder, collection)
    weights = getattr(encoder, "vector_weights", None)  # MoEE sum: cos hs + w * cos rw
    if using == DEFAULT_VECTOR and isinstance(weights, dict) and len(weights) > 1:
        from indexer.fusion import fused_search_batch

        named = encoder.encode_queries_named(list(queries), instruction)  # type: ignore[attr-defined]
        return fused_search_batch(store, resolved, named, weights, top_k=top_k, filter=filter)
    vectors = np.asarray(encoder.encode_queries(list(queries), instruction), dtype=np.float32)
    # search the resolved collection: a concurrent alias switch cannot mix two builds in a batch
    return store.search_batch(resolved, vectors, using=using, top_k=top_k, filter=filter)

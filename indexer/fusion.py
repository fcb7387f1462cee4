"""Exact weighted-sum search over several named vectors (MoEE ``sum``: cos hs + w * cos rw).

Qdrant ranks by one vector at a time, so the fused top-k is found with the threshold algorithm
(Fagin et al.), which is exact, not approximate:

1. search each named vector for its top ``K`` candidates (same filter);
2. re-score the union of the candidates with *every* vector: scores missing from a list are
   computed from the stored vectors (:meth:`indexer.store.Store.retrieve_vectors`), so each
   candidate gets its exact fused score ``sum_n w_n * cos_n``;
3. a point outside the union scored at most the ``K``-th score in every list, so its fused
   score is at most ``T = sum_n w_n * kth_n`` (weights are non-negative). If the ``top_k``-th
   fused score is >= ``T``, no outside point can enter the top-k: the answer is exact. A list
   shorter than ``K`` means every point passing the filter has been seen: exact as well.
   Otherwise ``K`` grows (x4) for the queries that are not settled yet, and step 1 repeats.

With exact per-vector search (Qdrant local mode, brute force) the result equals the brute-force
fused ranking; with HNSW (server, edge) it is exact with respect to what HNSW returns per list.

Pages and document hits (:func:`fused_search_page`) are cut from that exact fused ranking the way
the store cuts them from an engine's (:mod:`indexer.groups`): fetched deeper until settled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Unpack

import numpy as np

from encoders.vectors import l2_normalize
from indexer.groups import Page, settle_each
from indexer.store import Hit, PageOptions, Store

GROWTH = 4


def fused_search_batch(
    store: Store,
    collection: str,
    queries: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
    *,
    top_k: int = 10,
    filter: dict[str, Any] | None = None,
    pool: int | None = None,
) -> list[list[Hit]]:
    """Top ``top_k`` hits per query row by ``sum_n weights[n] * cos(query[n], point[n])``.

    ``queries`` maps each vector name to a [Q, dim] array (one row per query); ``pool`` is the
    first candidate depth per vector (default ``max(4 * top_k, 32)``). Hit scores are the fused
    scores."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    names = list(weights)
    if not names:
        raise ValueError("fused search needs at least one weighted vector")
    if any(w < 0 for w in weights.values()):
        raise ValueError(f"fused search weights must be non-negative, got {dict(weights)}")
    missing = [n for n in names if n not in queries]
    if missing:
        raise ValueError(f"no query vectors for {missing}")
    arrays = {n: np.atleast_2d(np.asarray(queries[n], dtype=np.float32)) for n in names}
    rows = {a.shape[0] for a in arrays.values()}
    if len(rows) != 1:
        raise ValueError(f"every named query array needs the same number of rows, got {rows}")
    first = max(pool or GROWTH * top_k, top_k, 1)

    def attempt(pending: list[int], scale: int) -> list[list[Hit] | None]:
        depth = first * scale
        lists = {
            n: store.search_batch(
                collection, arrays[n][pending], using=n, top_k=depth, filter=filter
            )
            for n in names
        }
        out: list[list[Hit] | None] = []
        for slot, q in enumerate(pending):
            per_name = {n: lists[n][slot] for n in names}
            hits = _rescore(store, collection, {n: arrays[n][q] for n in names}, weights, per_name)
            exhausted = any(len(h) < depth for h in per_name.values())
            threshold = sum(weights[n] * per_name[n][-1].score for n in names if per_name[n])
            settled = exhausted or (len(hits) >= top_k and hits[top_k - 1].score >= threshold)
            out.append(hits[:top_k] if settled else None)
        return out

    return settle_each(rows.pop(), attempt, GROWTH)


def fused_search_page(
    store: Store,
    collection: str,
    queries: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
    **options: Unpack[PageOptions],
) -> list[list[Hit]]:
    """:func:`fused_search_batch`'s ranking, hits ``offset`` to ``offset + top_k``: chunk hits,
    or one hit per distinct ``payload[group_by]`` (its best chunks as passages)."""
    page = Page.of(options)
    arrays = {n: np.atleast_2d(np.asarray(queries[n], dtype=np.float32)) for n in queries}

    def attempt(pending: list[int], scale: int) -> list[list[Hit] | None]:
        limit = page.first_fetch * scale
        found = fused_search_batch(
            store, collection, {n: a[pending] for n, a in arrays.items()}, weights, top_k=limit,
            filter=options.get("filter"),
        )  # fmt: skip
        return [page.of_chunks(hits, limit) for hits in found]

    return settle_each(max((a.shape[0] for a in arrays.values()), default=0), attempt)


def _rescore(
    store: Store,
    collection: str,
    query: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
    per_name: Mapping[str, list[Hit]],
) -> list[Hit]:
    """Exact fused scores for the union of the candidates, best first (ties by id)."""
    scores: dict[str, dict[str, float]] = {}
    payloads: dict[str, dict[str, Any]] = {}
    for name, hits in per_name.items():
        for hit in hits:
            scores.setdefault(hit.id, {})[name] = hit.score
            payloads.setdefault(hit.id, hit.payload)
    for name in per_name:
        unknown = [pid for pid, s in scores.items() if name not in s]
        if not unknown:
            continue
        stored = store.retrieve_vectors(collection, unknown, [name])
        q = l2_normalize(query[name])
        for pid in unknown:
            if pid in stored:  # a point deleted meanwhile is dropped below
                scores[pid][name] = float(l2_normalize(stored[pid][name]) @ q)
    fused = [
        Hit(id=pid, score=sum(weights[n] * s[n] for n in per_name), payload=payloads[pid])
        for pid, s in scores.items()
        if len(s) == len(per_name)
    ]
    fused.sort(key=lambda h: (-h.score, h.id))
    return fused

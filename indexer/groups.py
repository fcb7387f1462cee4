"""Pages of ranked hits, chunk by chunk or one per document, the same on every backend.

A searcher expects documents, not chunks: grouped by ``doc_id`` (the payload field
:mod:`indexer.pipeline` writes on every chunk), a document appears once, scored by its best chunk,
with its best chunks attached as passages (:attr:`indexer.store.Hit.passages`).

Pages are stable: hits are ranked by ``(-score, id)`` (the best chunk's id for a document), and a
page ``[offset, offset + top_k)`` is only cut from candidates that settle it. An engine answers a
request for ``n`` chunks with its top ``n``; any chunk it did not return scores at most the lowest
score returned. So when the last unit (chunk or document) of the page scores strictly above that
floor, no unseen chunk can enter the page, tie with it or add a document to it; when the engine
returned fewer than ``n`` chunks, nothing is unseen. Otherwise the caller fetches more
(:data:`GROWTH` times as many) and asks again. Page 2 therefore starts exactly after page 1's last
hit, and the pages concatenate to the unpaged ranking (with exact search; HNSW is approximate
whatever the paging). Hybrid search ranks the top ``max(fusion.prefetch, offset + top_k)`` fused
chunks (wider prefetches would move the fused scores), so its pages are stable while
``offset + top_k`` stays within ``fusion.prefetch`` (100 by default).

Passages are the document's best chunks among the candidates: always a prefix of its own ranking
(an unseen chunk scores below every seen one), so the first is its best chunk, and a document may
show fewer than ``group_size`` when its other chunks rank below the candidates fetched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from indexer.store import Hit

DOC_ID: Final = "doc_id"  # the payload field indexer.pipeline writes: hits group by document on it
PASSAGES = 3  # best chunks attached to a document hit
FETCH_FACTOR = 4  # chunks fetched per document wanted, to start with
GROWTH = 4  # how much more to fetch when the candidates did not settle the page
MAX_OFFSET = 1000  # the API's bound (deep pages fetch offset + top_k documents)


def rank_key(hit: Hit) -> tuple[float, str]:
    return (-hit.score, hit.id)


def check_page(top_k: int, offset: int, group_size: int = PASSAGES) -> None:
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")


def first_fetch(top_k: int, offset: int, group_by: str | None) -> int:
    """How many chunks to ask the engine for first: one more than the page needs for chunk hits
    (the extra one shows whether the page's last hit ties with what follows), a few per
    document for grouped hits."""
    need = offset + top_k
    return need + 1 if group_by is None else need * FETCH_FACTOR


def group_key(hit: Hit, group_by: str) -> str | int | None:
    value = hit.payload.get(group_by)
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None  # like Qdrant, points without a keyword or integer value are left out
    return value


def group_hits(hits: Sequence[Hit], group_by: str, group_size: int = PASSAGES) -> list[Hit]:
    """One hit per distinct ``payload[group_by]``, best first: the best chunk's id, score and
    payload, with its best ``group_size`` chunks (itself first) as passages."""
    groups: dict[str | int, list[Hit]] = {}
    for hit in sorted(hits, key=rank_key):
        key = group_key(hit, group_by)
        if key is None:
            continue
        members = groups.setdefault(key, [])
        if len(members) < group_size:
            members.append(hit)
    return [replace(members[0], passages=tuple(members)) for members in groups.values()]


def settle(
    units: Sequence[Hit], *, complete: bool, floor: float, offset: int, top_k: int
) -> list[Hit] | None:
    """The page ``[offset, offset + top_k)`` of ``units`` (ranked), or None while unseen
    candidates (scoring at most ``floor``) could still change it; ``complete``: none are unseen."""
    need = offset + top_k
    if complete:
        return list(units[offset:need])
    if len(units) < need or units[need - 1].score <= floor:
        return None
    return list(units[offset:need])


def page_of_chunks(
    hits: Sequence[Hit],
    *,
    fetched: int,
    offset: int,
    top_k: int,
    group_by: str | None = None,
    group_size: int = PASSAGES,
) -> list[Hit] | None:
    """The page of an engine's answer ``hits`` to a request for ``fetched`` chunks (chunk hits,
    or grouped by ``group_by``), or None when more chunks must be fetched to settle it."""
    units = (
        sorted(hits, key=rank_key) if group_by is None else group_hits(hits, group_by, group_size)
    )
    return settle(
        units,
        complete=len(hits) < fetched,
        floor=min((h.score for h in hits), default=0.0),
        offset=offset,
        top_k=top_k,
    )


def page_of_groups(
    groups: Sequence[Hit], *, fetched: int, offset: int, top_k: int
) -> list[Hit] | None:
    """The page of an engine's own grouping (``query_points_groups``) asked for ``fetched``
    groups, or None when more groups must be fetched: the extra group beyond the page shows
    whether its last document ties with an unseen one."""
    units = sorted(groups, key=rank_key)
    return settle(
        units,
        complete=len(units) < fetched,
        floor=units[-1].score if units else 0.0,
        offset=offset,
        top_k=top_k,
    )


@dataclass(frozen=True)
class Page:
    """Which hits a search answers: ``[offset, offset + top_k)`` of the chunk ranking, or with
    ``group_by`` of the documents' (each with its best ``group_size`` chunks as passages)."""

    top_k: int = 10
    offset: int = 0
    group_by: str | None = None
    group_size: int = PASSAGES

    def __post_init__(self) -> None:
        check_page(self.top_k, self.offset, self.group_size)

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> Page:
        """The page a search's keyword options ask for (:class:`indexer.store.PageOptions`;
        ``filter`` is not the page's business); the defaults are this class's."""
        return cls(
            **{f: options[f] for f in ("top_k", "offset", "group_by", "group_size") if f in options}
        )

    @property
    def first_fetch(self) -> int:
        return first_fetch(self.top_k, self.offset, self.group_by)

    def of_chunks(self, hits: Sequence[Hit], fetched: int) -> list[Hit] | None:
        """:func:`page_of_chunks` of this page."""
        return page_of_chunks(
            hits, fetched=fetched, offset=self.offset, top_k=self.top_k, group_by=self.group_by,
            group_size=self.group_size,
        )  # fmt: skip

    def of_groups(self, groups: Sequence[Hit], fetched: int) -> list[Hit] | None:
        """:func:`page_of_groups` of this page."""
        return page_of_groups(groups, fetched=fetched, offset=self.offset, top_k=self.top_k)


Attempt = Callable[[list[int], int], Sequence["list[Hit] | None"]]


def settle_each(queries: int, attempt: Attempt, growth: int = GROWTH) -> list[list[Hit]]:
    """The answer of each of ``queries`` queries: ``attempt(pending, scale)`` answers the queries
    ``pending`` with what fetching ``scale`` times the first depth settles (None for a query it
    does not settle); those are asked again ``growth`` times deeper, until none is left."""
    answers: dict[int, list[Hit]] = {}
    pending, scale = list(range(queries)), 1
    while pending:
        found = attempt(pending, scale)
        for q, answer in zip(pending, found, strict=True):
            if answer is not None:
                answers[q] = answer
        pending = [q for q in pending if q not in answers]
        scale *= growth
    return [answers[q] for q in range(queries)]


def passages_of(hit: Hit) -> list[dict[str, Any]]:
    """A hit's passages as plain values (chunk index, text, score, id) for JSON answers."""
    return [
        {
            "id": p.id,
            "chunk": p.payload.get("chunk_index"),
            "text": p.payload.get("text"),
            "score": p.score,
        }
        for p in hit.passages
    ]

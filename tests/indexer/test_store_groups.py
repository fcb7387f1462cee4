"""Document hits and pages: the Store contract on both embedded backends (edge groups client side
from over-fetched chunks, local mode with Qdrant's own ``query_points_groups``), checked against
brute force over the stored vectors."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

import numpy as np
import pytest

from indexer.groups import DOC_ID, group_hits, page_of_chunks
from indexer.sparse import SPARSE_VECTOR, embed_documents, embed_queries
from indexer.store import Hit, Point, Store
from tests.indexer.conftest import BOTH

DIM = 8
N_DOCS = 12
WORDS = ["heart", "cholesterol", "vitamin", "infection", "sleep", "liver", "cat", "sun"]

pytestmark = BOTH


def pid(doc: int, chunk: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"groups-{doc}-{chunk}"))


def fill(store: Store, name: str = "docs") -> dict[str, Any]:
    """Documents of 1 to 4 chunks, document 0 of 5 that all lie close to ``query``; documents 7
    and 8 hold one identical chunk each (an exact tie, ranked by id)."""
    rng = np.random.default_rng(11)
    query = rng.standard_normal(DIM).astype(np.float32)
    query /= np.linalg.norm(query)
    points, chunks = [], []
    for d in range(N_DOCS):
        for c in range(5 if d == 0 else 1 + d % 4):
            v = rng.standard_normal(DIM).astype(np.float32)
            if d == 0:
                v = query + 0.05 * v
            if d in (7, 8) and c == 0:
                v = np.ones(DIM, dtype=np.float32) + query
            text = " ".join(WORDS[(d + c + k) % len(WORDS)] for k in range(1 + (d * c) % 3))
            chunks.append((f"doc{d}", c, v / np.linalg.norm(v), text, "en" if d % 3 else "de"))
    sparse = embed_documents([t for *_, t, _ in chunks])
    for (doc, c, v, text, lang), s in zip(chunks, sparse, strict=True):
        points.append(
            Point(
                pid(int(doc[3:]), c),
                {"dense": v},
                {DOC_ID: doc, "chunk_index": c, "text": text, "lang": lang},
                {SPARSE_VECTOR: s},
            )
        )
    store.create_collection(name, {"dense": DIM}, sparse=(SPARSE_VECTOR,))
    store.upsert(name, points)
    return {"query": query, "chunks": chunks}


def brute_force(store: Store, data: dict[str, Any], lang: str | None = None) -> list[Hit]:
    """Chunk hits by cosine from the stored vectors, ranked by (-score, id)."""
    ids = [pid(int(doc[3:]), c) for doc, c, *_ in data["chunks"]]
    stored = store.retrieve_vectors("docs", ids, ["dense"])
    hits = []
    for (doc, c, _v, _text, chunk_lang), i in zip(data["chunks"], ids, strict=True):
        if lang is not None and chunk_lang != lang:
            continue
        v = stored[i]["dense"]
        score = float(v @ data["query"] / np.linalg.norm(v))
        hits.append(Hit(i, score, {DOC_ID: doc, "chunk_index": c}))
    return sorted(hits, key=lambda h: (-h.score, h.id))


def test_one_hit_per_document_scored_by_its_best_chunk(store: Store) -> None:
    data = fill(store)
    hits = store.search("docs", data["query"], top_k=N_DOCS, group_by=DOC_ID)
    docs = [h.payload[DOC_ID] for h in hits]
    assert len(docs) == len(set(docs)) == N_DOCS  # every document once
    assert docs[0] == "doc0"  # all five of its chunks match: it still appears once
    chunks = brute_force(store, data)
    per_doc: dict[str, list[Hit]] = defaultdict(list)
    for h in chunks:
        per_doc[h.payload[DOC_ID]].append(h)
    want = sorted(per_doc, key=lambda d: (-per_doc[d][0].score, per_doc[d][0].id))
    assert docs == want  # documents by their best chunk, ties by id
    for hit in hits:
        best = per_doc[hit.payload[DOC_ID]]
        assert hit.score == pytest.approx(best[0].score, abs=1e-5)  # the max of its chunks
        assert hit.id == best[0].id and hit.passages[0].id == hit.id
        assert 1 <= len(hit.passages) <= 3
        # the passages are that document's best chunks, best first
        assert [p.id for p in hit.passages] == [h.id for h in best[: len(hit.passages)]]
        np.testing.assert_allclose(
            [p.score for p in hit.passages],
            [h.score for h in best[: len(hit.passages)]],
            atol=1e-5,
        )
    assert [p.payload["chunk_index"] for p in hits[0].passages][:1] == [
        per_doc["doc0"][0].payload["chunk_index"]
    ]
    assert len(hits[0].passages) == 3  # doc0: five chunks, the three best attached


def test_chunk_hits_stay_the_default(store: Store) -> None:
    data = fill(store)
    hits = store.search("docs", data["query"], top_k=8)
    assert [h.id for h in hits] == [h.id for h in brute_force(store, data)[:8]]
    assert all(h.passages == () for h in hits)
    assert [h.payload[DOC_ID] for h in hits[:5]] == ["doc0"] * 5  # what grouping fixes


@pytest.mark.parametrize("group_by", [DOC_ID, None])
@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_pages_concatenate_to_the_unpaged_ranking(
    store: Store, mode: str, group_by: str | None
) -> None:
    data = fill(store)
    sparse = embed_queries(["heart vitamin sleep"])

    def run(top_k: int, offset: int = 0) -> list[Hit]:
        kw: dict[str, Any] = {"top_k": top_k, "offset": offset, "group_by": group_by}
        if mode == "dense":
            return store.search("docs", data["query"], **kw)
        if mode == "sparse":
            return store.search_sparse_batch("docs", sparse, **kw)[0]
        return store.search_hybrid_batch("docs", data["query"][None, :], sparse, **kw)[0]

    whole = run(40)
    assert len(whole) >= 9
    pages = [run(3, offset) for offset in range(0, 45, 3)]
    assert [h.id for page in pages for h in page] == [h.id for h in whole]
    assert [h.score for page in pages for h in page] == pytest.approx([h.score for h in whole])
    scores = [(-h.score, h.id) for h in whole]
    assert scores == sorted(scores)  # ties ranked by id
    if group_by is not None:
        docs = [h.payload[DOC_ID] for h in whole]
        assert len(docs) == len(set(docs))
    assert run(3, offset=500) == []


def test_the_tie_is_ranked_by_id_across_pages(store: Store) -> None:
    data = fill(store)
    tie = np.ones(DIM, dtype=np.float32) + data["query"]
    first = store.search("docs", tie, top_k=1, group_by=DOC_ID)
    second = store.search("docs", tie, top_k=1, offset=1, group_by=DOC_ID)
    assert first[0].score == pytest.approx(second[0].score)  # docs 7 and 8: the same vector
    assert {first[0].payload[DOC_ID], second[0].payload[DOC_ID]} == {"doc7", "doc8"}
    assert first[0].id < second[0].id


def test_filters_apply_before_grouping(store: Store) -> None:
    data = fill(store)
    hits = store.search("docs", data["query"], top_k=N_DOCS, filter={"lang": "en"}, group_by=DOC_ID)
    chunks = brute_force(store, data, lang="en")
    want: dict[str, float] = {}
    for h in chunks:
        want.setdefault(h.payload[DOC_ID], h.score)
    assert [h.payload[DOC_ID] for h in hits] == list(want)
    assert [h.score for h in hits] == pytest.approx(list(want.values()), abs=1e-5)
    assert all(p.payload["lang"] == "en" for h in hits for p in h.passages)


def test_hybrid_documents_are_the_grouped_chunk_ranking(store: Store) -> None:
    data = fill(store)
    sparse = embed_queries(["cholesterol infection"])
    (chunks,) = store.search_hybrid_batch("docs", data["query"][None, :], sparse, top_k=100)
    (docs,) = store.search_hybrid_batch(
        "docs", data["query"][None, :], sparse, top_k=5, group_by=DOC_ID, filter={"lang": "en"}
    )
    (en_chunks,) = store.search_hybrid_batch(
        "docs", data["query"][None, :], sparse, top_k=100, filter={"lang": "en"}
    )
    want = group_hits(en_chunks, DOC_ID)[:5]
    assert [h.id for h in docs] == [h.id for h in want]
    assert [h.score for h in docs] == pytest.approx([h.score for h in want])
    assert len(chunks) > len(en_chunks)


def test_page_of_chunks_asks_for_more_until_settled(store: Store) -> None:
    del store  # a pure helper: one run is enough, on either parameter
    hits = [Hit(f"c{i}", 1.0 - i / 10, {DOC_ID: "a" if i < 3 else f"d{i}"}) for i in range(5)]
    # five chunks fetched, two documents wanted: a (chunks c0-c2) and d3, settled because d3
    # scores above the floor (d4, the lowest chunk fetched: unseen chunks score at most that)
    page = page_of_chunks(hits, fetched=5, offset=0, top_k=2, group_by=DOC_ID)
    assert page is not None and [h.payload[DOC_ID] for h in page] == ["a", "d3"]
    assert [p.id for p in page[0].passages] == ["c0", "c1", "c2"]
    # three documents wanted: the third would be the last chunk fetched, so unseen chunks
    # could tie it: fetch more
    assert page_of_chunks(hits, fetched=5, offset=0, top_k=3, group_by=DOC_ID) is None
    # the engine returned fewer than asked: nothing is unseen
    page = page_of_chunks(hits, fetched=6, offset=1, top_k=3, group_by=DOC_ID)
    assert page is not None and [h.payload[DOC_ID] for h in page] == ["d3", "d4"]

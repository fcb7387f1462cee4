"""The Store contract, run against both embedded backends (qdrant-client local, qdrant-edge)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from indexer.settings import Settings
from indexer.store import (
    CollectionExistsError,
    CollectionNotFoundError,
    Point,
    Store,
    StoreError,
    parse_filter,
)
from indexer.stores import open_store
from tests.indexer.conftest import BOTH

DIM = 8

pytestmark = BOTH  # the whole Store contract runs on both embedded backends


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def pid(i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, str(i)))


def fill(store: Store, name: str, n: int = 40, seed: int = 0) -> np.ndarray:
    vecs = unit(np.random.default_rng(seed), n)
    store.create_collection(name, {"dense": DIM})
    store.upsert(
        name,
        [
            Point(
                pid(i),
                {"dense": vecs[i]},
                {"i": i, "lang": ["en", "de", "fr"][i % 3], "score": i / 2, "flag": i % 2 == 0},
            )
            for i in range(n)
        ],
    )
    return vecs


def test_search_ranks_by_cosine(store: Store) -> None:
    vecs = fill(store, "c1")
    query = vecs[7] + 0.01
    hits = store.search("c1", query, top_k=5)
    sims = vecs @ (query / np.linalg.norm(query))
    expected = [pid(int(i)) for i in np.argsort(-sims)[:5]]
    assert [h.id for h in hits] == expected
    np.testing.assert_allclose([h.score for h in hits], np.sort(sims)[::-1][:5], atol=1e-4)
    assert hits[0].payload["i"] == 7


def test_upsert_is_idempotent_by_id(store: Store) -> None:
    vecs = fill(store, "c1", n=10)
    assert store.count("c1") == 10
    store.upsert("c1", [Point(pid(3), {"dense": vecs[3]}, {"i": 3, "lang": "xx"})])
    assert store.count("c1") == 10
    [hit] = store.search("c1", vecs[3], top_k=1)
    assert hit.payload == {"i": 3, "lang": "xx"}  # overwritten, not duplicated


@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        ({"lang": "de"}, lambda i: i % 3 == 1),
        ({"lang": ["en", "fr"]}, lambda i: i % 3 != 1),
        ({"i": {"gte": 10, "lt": 20}}, lambda i: 10 <= i < 20),
        ({"score": {"gt": 5.0}}, lambda i: i / 2 > 5.0),
        ({"i": 4}, lambda i: i == 4),
        ({"i": [1, 2, 3]}, lambda i: i in (1, 2, 3)),
        ({"flag": True}, lambda i: i % 2 == 0),
        # qdrant-client's MatchAny refuses booleans: a bool list becomes an OR of matches
        ({"flag": [True, False]}, lambda i: True),
        ({"flag": [False]}, lambda i: i % 2 == 1),
        ({"lang": ["de"], "flag": [True]}, lambda i: i % 3 == 1 and i % 2 == 0),
        ({"score": 2.5}, lambda i: i == 5),
        ({"lang": "en", "i": {"lte": 12}}, lambda i: i % 3 == 0 and i <= 12),
    ],
)
def test_filters(store: Store, filter: dict[str, Any], expected: Any) -> None:
    vecs = fill(store, "c1")
    hits = store.search("c1", vecs[0], top_k=100, filter=filter)
    assert sorted(h.payload["i"] for h in hits) == [i for i in range(40) if expected(i)]


@pytest.mark.parametrize(
    ("filter", "message"),
    [
        ({"year": {"between": [1, 2]}}, "'year': unknown operator 'between'"),
        ({"year": {"gte": "2000"}}, "'year': gte needs a number"),
        ({"tags": []}, "'tags': empty list"),
        ({"x": None}, "'x': expected a string, number or boolean"),
        ({"x": {}}, "'x': empty range"),
    ],
)
def test_bad_filters_name_the_field(store: Store, filter: dict[str, Any], message: str) -> None:
    vecs = fill(store, "c1", n=3)
    with pytest.raises(ValueError, match=message):
        store.search("c1", vecs[0], filter=filter)
    with pytest.raises(ValueError, match=message):
        parse_filter(filter)


def test_alias_switch_and_listing(store: Store) -> None:
    a = fill(store, "v1", n=5, seed=1)
    fill(store, "v2", n=7, seed=2)
    assert store.get_alias("docs") is None
    store.switch_alias("docs", "v1")
    assert store.get_alias("docs") == "v1"
    assert store.count("docs") == 5
    assert store.search("docs", a[2], top_k=1)[0].id == pid(2)
    store.switch_alias("docs", "v2")
    assert store.get_alias("docs") == "v2"
    assert store.count("docs") == 7
    infos = {c.name: c for c in store.list_collections()}
    assert set(infos) == {"v1", "v2"}
    assert infos["v2"].aliases == ["docs"] and infos["v1"].aliases == []
    assert infos["v2"].points == 7 and infos["v2"].vectors == {"dense": DIM}
    assert store.resolve("docs") == "v2" and store.resolve("v1") == "v1"
    with pytest.raises(CollectionNotFoundError):
        store.switch_alias("docs", "missing")
    with pytest.raises(ValueError, match="shadow"):
        store.switch_alias("v1", "v2")
    assert store.get_alias("docs") == "v2"  # failed switches changed nothing


def test_delete_collection_drops_its_aliases(store: Store) -> None:
    fill(store, "v1", n=3)
    store.switch_alias("docs", "v1")
    store.delete_collection("v1")
    assert store.get_alias("docs") is None
    assert store.list_collections() == []
    store.delete_collection("v1")  # missing: no error
    with pytest.raises(CollectionNotFoundError):
        store.search("docs", np.ones(DIM, np.float32))
    with pytest.raises(CollectionNotFoundError):
        store.resolve("docs")


def test_create_rejects_duplicates_and_bad_input(store: Store) -> None:
    fill(store, "v1", n=2)
    store.switch_alias("docs", "v1")
    with pytest.raises(CollectionExistsError, match="already exists"):
        store.create_collection("v1", {"dense": DIM})
    with pytest.raises(ValueError, match="already exists"):
        store.create_collection("docs", {"dense": DIM})
    with pytest.raises(ValueError, match="invalid collection name"):
        store.create_collection("../escape", {"dense": DIM})
    with pytest.raises(ValueError, match="dimension"):
        store.create_collection("v9", {"dense": 0})
    with pytest.raises(ValueError, match="payload index"):
        store.create_collection("v9", {"dense": 4}, {"year": "bigint"})
    with pytest.raises(ValueError, match="NaN"):
        store.upsert("v1", [Point(pid(0), {"dense": np.full(DIM, np.nan)}, {})])
    with pytest.raises(CollectionNotFoundError):
        store.upsert("nope", [Point(pid(0), {"dense": np.ones(DIM)}, {})])


def test_named_vectors(store: Store) -> None:
    rng = np.random.default_rng(3)
    hs, rw = unit(rng, 6, 8), unit(rng, 6, 4)
    store.create_collection("moe", {"hs": 8, "rw": 4}, payload_indexes={"i": "integer"})
    store.upsert("moe", [Point(pid(i), {"hs": hs[i], "rw": rw[i]}, {"i": i}) for i in range(6)])
    assert store.search("moe", hs[4], using="hs", top_k=1)[0].payload["i"] == 4
    assert store.search("moe", rw[1], using="rw", top_k=1)[0].payload["i"] == 1
    assert store.list_collections()[0].vectors == {"hs": 8, "rw": 4}


def test_search_batch_matches_single_searches(store: Store) -> None:
    vecs = fill(store, "c1")
    batch = store.search_batch("c1", vecs[:4], top_k=3, filter={"lang": "en"})
    single = [store.search("c1", v, top_k=3, filter={"lang": "en"}) for v in vecs[:4]]
    assert [[h.id for h in r] for r in batch] == [[h.id for h in r] for r in single]


def test_persists_across_reopen(tmp_path: Path, store: Store) -> None:
    vecs = fill(store, "v1", n=12)
    store.switch_alias("docs", "v1")
    store.optimize("v1")
    backend = store.backend
    store.close()
    reopened = open_store(Settings(data_dir=tmp_path, embedded_backend=backend))
    try:
        assert reopened.get_alias("docs") == "v1"
        assert reopened.count("docs") == 12
        assert reopened.search("docs", vecs[5], top_k=1)[0].id == pid(5)
    finally:
        reopened.close()


def test_folder_is_locked_to_one_store(tmp_path: Path, store: Store) -> None:
    with pytest.raises(StoreError, match="locked by another process"):
        open_store(Settings(data_dir=tmp_path, embedded_backend=store.backend))


def test_concurrent_searches_during_upserts(store: Store) -> None:
    """The API searches from a thread pool while an in-process job writes the same store."""
    import threading

    vecs = fill(store, "c1", n=50)
    more = unit(np.random.default_rng(9), 200)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(40):
                assert len(store.search("c1", vecs[0], top_k=5)) == 5
        except BaseException as exc:
            errors.append(exc)

    def writer() -> None:
        try:
            for s in range(0, 200, 20):
                store.upsert(
                    "c1", [Point(pid(1000 + i), {"dense": more[i]}, {}) for i in range(s, s + 20)]
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)] + [
        threading.Thread(target=writer)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count("c1") == 250


def test_resolving_a_plain_name_does_not_list_and_count_every_collection(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(store, "c1", n=3)
    fill(store, "c2", n=3)
    store.switch_alias("docs", "c2")

    def no_listing() -> None:
        raise AssertionError("resolve listed every collection")

    monkeypatch.setattr(store, "list_collections", no_listing)
    assert store.resolve("c1") == "c1" and store.resolve("docs") == "c2"
    assert store.has_collection("c1") and store.has_collection("docs")
    assert not store.has_collection("nope")
    with pytest.raises(CollectionNotFoundError):
        store.resolve("nope")

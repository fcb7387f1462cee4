"""The :class:`~indexer.store.Store` interface over ``qdrant-edge-py``: the Qdrant engine itself,
in-process (HNSW, payload indexes, WAL), with no server.

An edge *shard* is one collection, so this store adds the collection layer around shards::

    <root>/manifest.json        collections (vectors, payload indexes) and aliases
    <root>/shards/<name>/       one EdgeShard per collection
    <root>/.lock                fcntl lock: one process owns the folder

``manifest.json`` is the source of truth (:mod:`indexer.store.manifest`): it is replaced
atomically, so an alias switch or a collection create/delete is all-or-nothing even if the process
dies mid-way. A shard folder the manifest does not name (a crash between creating
the shard and recording it) is removed when the store is opened.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexer.sparse import Fusion, SparseVector
from indexer.store.base import HybridQuery, Store
from indexer.store.filters import FilterFactory
from indexer.store.manifest import Manifest
from indexer.store.model import (
    CollectionExistsError,
    CollectionInfo,
    CollectionNotFoundError,
    CollectionSpec,
    Hit,
    Point,
    StoreError,
    StoreLockedError,
    build_complete,
    check_name,
)

# HNSW candidates per search; chosen by measurement (bench/search_latency.py --hnsw-ef sweep,
# see bench/RESULTS.md "Embedded store")
DEFAULT_HNSW_EF = 256


def _edge() -> Any:
    import qdrant_edge

    return qdrant_edge


def _match_value(value: Any) -> Any:
    """``MatchValue`` that keeps booleans booleans: qdrant-edge 0.9.0 extracts a Python ``bool``
    as the integer 0/1 (bool subclasses int), so ``MatchValue(True)`` never matches a boolean
    payload. ``numpy.bool_`` is not an int and is extracted as a bool."""
    return _edge().MatchValue(np.bool_(value) if isinstance(value, bool) else value)


def _fusion_query(fusion: Fusion) -> Any:
    e = _edge()
    if fusion.method == "rrf":
        return e.Fusion.Rrf(k=fusion.k)
    if fusion.method == "dbsf":
        return e.Fusion.Dbsf()
    x = e.Expression
    sparse = x.Variable("$score[1]")
    squashed = x.Div(sparse, x.Sum([sparse, x.Constant(fusion.scale)]), 0.0)
    formula = x.Sum(
        [
            x.Mult([x.Constant(fusion.weight), x.Variable("$score[0]")]),
            x.Mult([x.Constant(1.0 - fusion.weight), squashed]),
        ]
    )
    return e.Formula(formula, defaults={"$score[0]": 0.0, "$score[1]": 0.0})


class _EdgeFilters(FilterFactory):
    def match(self, field: str, value: str | int | bool) -> Any:
        return _edge().FieldCondition(key=field, match=_match_value(value))

    def match_any(self, field: str, values: list[str | int]) -> Any:
        return _edge().FieldCondition(key=field, match=_edge().MatchAny(values))

    def range(self, field: str, bounds: dict[str, float]) -> Any:
        return _edge().FieldCondition(key=field, range=_edge().RangeFloat(**bounds))

    def all_of(self, conditions: list[Any]) -> Any:
        return _edge().Filter(must=conditions)

    def any_of(self, conditions: list[Any]) -> Any:
        return _edge().Filter(should=conditions)


class EdgeStore(Store):
    backend = "edge"
    filters = _EdgeFilters()

    def __init__(self, root: str | Path, *, hnsw_ef: int | None = DEFAULT_HNSW_EF) -> None:
        """``hnsw_ef``: candidates explored per HNSW search (recall vs latency; None = the
        engine's default). Small collections and selective filters are searched exactly anyway
        (below the engine's full-scan threshold)."""
        if hnsw_ef is not None and hnsw_ef < 1:
            raise ValueError(f"hnsw_ef must be >= 1, got {hnsw_ef}")
        self.hnsw_ef = hnsw_ef
        self.root = Path(root)
        self.location = str(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "shards").mkdir(exist_ok=True)
        self._lock = threading.RLock()
        self._lock_file = (self.root / ".lock").open("a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            raise StoreLockedError(self.root) from None
        self.closed = False
        self._shards: dict[str, Any] = {}
        self._manifest = Manifest(self.root)
        self._remove_orphans()

    # ---- manifest -------------------------------------------------------------------------
    def _remove_orphans(self) -> None:
        for folder in (self.root / "shards").iterdir():
            if folder.name not in self._manifest.collections:
                shutil.rmtree(folder, ignore_errors=True)

    # ---- shards ---------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise StoreError("the store is closed")

    def _shard(self, collection: str) -> Any:
        """The open shard of a collection (aliases are not followed here)."""
        with self._lock:
            self._check_open()
            if collection not in self._manifest.collections:
                raise CollectionNotFoundError(collection)
            shard = self._shards.get(collection)
            if shard is None:
                shard = _edge().EdgeShard.load(str(self.root / "shards" / collection))
                self._shards[collection] = shard
            return shard

    def _target(self, collection_or_alias: str) -> str:
        with self._lock:
            return str(self._manifest.aliases.get(collection_or_alias, collection_or_alias))

    # ---- interface ------------------------------------------------------------------------
    def _create_collection(self, name: str, spec: CollectionSpec) -> None:
        e = _edge()
        with self._lock:
            self._check_open()
            if name in self._manifest.collections or name in self._manifest.aliases:
                raise CollectionExistsError(name)
            path = self.root / "shards" / name
            shutil.rmtree(path, ignore_errors=True)
            vectors, sparse = spec.engine_vectors(
                lambda dim: e.EdgeVectorParams(size=dim, distance=e.Distance.Cosine),
                lambda: e.EdgeSparseVectorParams(modifier=e.Modifier.Idf),
            )
            config = e.EdgeConfig(vectors=vectors, sparse_vectors=sparse)
            shard = e.EdgeShard.create(str(path), config)
            for field, kind in spec.payload_indexes.items():
                shard.update(
                    e.UpdateOperation.create_field_index(
                        field, getattr(e.PayloadSchemaType, kind.capitalize())
                    )
                )
            shard.flush()
            self._shards[name] = shard
            manifest = self._manifest.copy()
            manifest["collections"][name] = {
                "vectors": spec.vectors,
                "payload_indexes": spec.payload_indexes,
                "sparse": list(spec.sparse),
                "meta": json.loads(json.dumps(dict(spec.meta or {}))),
            }
            self._manifest.save(manifest)

    def _sparse_vector(self, vector: SparseVector) -> Any:
        return _edge().SparseVector(list(vector.indices), list(vector.values))

    def _point(self, point: Point, vectors: dict[str, Any]) -> Any:
        return _edge().Point(id=point.id, vector=vectors, payload=point.payload)

    def _upsert(self, collection: str, points: list[Any]) -> None:
        shard = self._shard(collection)
        try:
            shard.update(_edge().UpdateOperation.upsert_points(points))
        except Exception as exc:  # qdrant-edge raises plain Exception for bad input
            raise ValueError(f"upsert into {collection!r}: {exc}") from None

    def count(self, collection: str) -> int:
        return int(self._shard(self._target(collection)).count(_edge().CountRequest(exact=True)))

    def _params(self, limit: int) -> Any:
        return _edge().SearchParams(hnsw_ef=max(self.hnsw_ef, limit)) if self.hnsw_ef else None

    def _dense_request(self, vector: list[float], using: str, limit: int, filter: Any) -> Any:
        e = _edge()
        return e.QueryRequest(
            limit=limit,
            query=e.Query.Nearest(vector, using=using),
            filter=filter,
            with_payload=True,
            params=self._params(limit),
        )

    def _sparse_request(self, query: SparseVector, using: str, limit: int, filter: Any) -> Any:
        e = _edge()
        return e.QueryRequest(
            limit=limit,
            query=e.Query.Nearest(self._sparse_vector(query), using=using),
            filter=filter,
            with_payload=True,
        )

    def _hybrid_request(self, query: HybridQuery, limit: int, filter: Any) -> Any:
        e = _edge()
        candidates = max(query.fusion.prefetch, limit)
        sparse = self._sparse_vector(query.sparse)
        return e.QueryRequest(
            limit=limit,
            prefetches=[
                e.Prefetch(
                    candidates,
                    query=e.Query.Nearest(query.dense, using=query.using),
                    filter=filter,
                    params=self._params(candidates),
                ),
                e.Prefetch(
                    candidates,
                    query=e.Query.Nearest(sparse, using=query.sparse_using),
                    filter=filter,
                ),
            ],
            query=_fusion_query(query.fusion),
            with_payload=True,
        )

    def _run(self, collection_or_alias: str, requests: Sequence[Any]) -> list[list[Hit]]:
        e = _edge()
        shard = self._shard(self._target(collection_or_alias))
        try:
            if len(requests) == 1:
                results = [shard.query(requests[0])]
            else:
                results = shard.query_batch(e.QueryBatchRequest(list(requests)))
        except Exception as exc:  # qdrant-edge raises plain Exception for bad input
            raise ValueError(f"search in {collection_or_alias!r}: {exc}") from None
        return [[Hit.scored(p) for p in res] for res in results]

    def sparse_names(self, collection: str) -> tuple[str, ...]:
        with self._lock:
            self._check_open()
            meta = self._manifest.collections.get(collection)
            if meta is None:
                raise CollectionNotFoundError(collection)
            return tuple(meta.get("sparse") or ())

    def _entry(self, collection_or_alias: str) -> str:
        """The collection a name refers to (an alias is followed), known to the manifest."""
        self._check_open()
        name = self._target(collection_or_alias)
        if name not in self._manifest.collections:
            raise CollectionNotFoundError(collection_or_alias)
        return name

    def collection_meta(self, collection_or_alias: str) -> dict[str, Any]:
        with self._lock:
            name = self._entry(collection_or_alias)
            return dict(self._manifest.collections[name].get("meta") or {})

    def update_collection_meta(self, collection_or_alias: str, meta: Mapping[str, Any]) -> None:
        with self._lock:
            name = self._entry(collection_or_alias)
            manifest = self._manifest.copy()
            entry = manifest["collections"][name]
            entry["meta"] = {**(entry.get("meta") or {}), **json.loads(json.dumps(dict(meta)))}
            self._manifest.save(manifest)

    def retrieve_vectors(
        self, collection_or_alias: str, ids: Sequence[str], names: Sequence[str]
    ) -> dict[str, dict[str, np.ndarray]]:
        if not ids:
            return {}
        shard = self._shard(self._target(collection_or_alias))
        records = shard.retrieve(list(ids), False, list(names))
        return {
            str(r.id): {n: np.asarray(r.vector[n], dtype=np.float32) for n in names}
            for r in records
        }

    def get_alias(self, alias: str) -> str | None:
        with self._lock:
            target = self._manifest.aliases.get(alias)
            return str(target) if target is not None else None

    def switch_alias(self, alias: str, collection: str) -> None:
        check_name(alias, "alias")
        with self._lock:
            self._check_open()
            if collection not in self._manifest.collections:
                raise CollectionNotFoundError(collection)
            if alias in self._manifest.collections:
                raise ValueError(f"alias {alias!r} would shadow a collection of that name")
            self._shard(collection).flush()  # the new target is durable before it serves
            manifest = self._manifest.copy()
            manifest["aliases"][alias] = collection
            self._manifest.save(manifest)

    def delete_alias(self, alias: str) -> None:
        with self._lock:
            self._check_open()
            if alias in self._manifest.aliases:
                manifest = self._manifest.copy()
                del manifest["aliases"][alias]
                self._manifest.save(manifest)

    def has_collection(self, name: str) -> bool:
        with self._lock:
            self._check_open()
            return name in self._manifest.collections or name in self._manifest.aliases

    def list_collections(self) -> list[CollectionInfo]:
        with self._lock:
            self._check_open()
            out = []
            for name, meta in sorted(self._manifest.collections.items()):
                aliases = sorted(a for a, t in self._manifest.aliases.items() if t == name)
                out.append(
                    CollectionInfo(
                        name=name,
                        aliases=aliases,
                        points=self.count(name),
                        vectors={k: int(v) for k, v in meta["vectors"].items()},
                        sparse=tuple(meta.get("sparse") or ()),
                        complete=build_complete(meta.get("meta")),
                    )
                )
            return out

    def delete_collection(self, name: str) -> None:
        with self._lock:
            self._check_open()
            if name not in self._manifest.collections:
                return
            manifest = self._manifest.copy()
            del manifest["collections"][name]
            manifest["aliases"] = {a: t for a, t in manifest["aliases"].items() if t != name}
            self._manifest.save(manifest)  # gone from the manifest first: a crash leaves an orphan
            shard = self._shards.pop(name, None)
            if shard is not None:
                shard.close()
            shutil.rmtree(self.root / "shards" / name, ignore_errors=True)

    def indexed_vectors(self, collection_or_alias: str) -> int:
        """Vectors the engine has put in an HNSW graph; 0 while every segment is below the
        indexing threshold (then every search is an exact full scan)."""
        return int(self._shard(self._target(collection_or_alias)).info().indexed_vectors_count)

    def optimize(self, collection: str) -> None:
        """Build the HNSW index (segments past the indexing threshold) and flush to disk."""
        shard = self._shard(self._target(collection))
        shard.optimize()
        shard.flush()

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            for shard in self._shards.values():
                with contextlib.suppress(Exception):
                    shard.flush()
                shard.close()
            self._shards.clear()
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()

"""The :class:`~indexer.store.Store` contract over ``qdrant-client``: embedded *local mode* (a
folder on disk, exact search in Python) or a *server* URL (production: HNSW, payload indexes,
many processes)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from indexer.groups import rank_key
from indexer.sparse import Fusion, SparseVector
from indexer.store.base import HybridQuery, Store
from indexer.store.filters import FilterFactory
from indexer.store.model import (
    CollectionExistsError,
    CollectionInfo,
    CollectionNotFoundError,
    CollectionSpec,
    Hit,
    Point,
    StoreLockedError,
    build_complete,
    check_name,
)


class _ClientFilters(FilterFactory):
    def __init__(self) -> None:
        from qdrant_client import models

        self.m = models

    def match(self, field: str, value: str | int | bool) -> Any:
        return self.m.FieldCondition(key=field, match=self.m.MatchValue(value=value))

    def match_any(self, field: str, values: list[str | int]) -> Any:
        return self.m.FieldCondition(key=field, match=self.m.MatchAny(any=values))  # type: ignore[arg-type]

    def range(self, field: str, bounds: dict[str, float]) -> Any:
        return self.m.FieldCondition(key=field, range=self.m.Range(**bounds))

    def all_of(self, conditions: list[Any]) -> Any:
        return self.m.Filter(must=conditions)

    def any_of(self, conditions: list[Any]) -> Any:
        return self.m.Filter(should=conditions)


class QdrantClientStore(Store):
    """``qdrant-client`` in embedded local mode (``path``) or against a server (``url``).

    Local mode keeps aliases natively in its ``meta.json`` (replaced atomically with
    ``os.replace``), so an alias switch is one atomic file replace. It searches exactly (brute
    force in numpy) and ignores payload indexes, so they are only created on a server.
    """

    def __init__(
        self,
        *,
        path: str | Path | None = None,
        url: str | None = None,
        api_key: str | None = None,
        timeout: int = 60,
    ) -> None:
        from qdrant_client import QdrantClient

        if (path is None) == (url is None):
            raise ValueError("give exactly one of path (embedded) or url (server)")
        self._lock = threading.RLock()
        self.filters = _ClientFilters()
        if path is not None:
            self.backend = "local"
            self.location = str(path)
            if str(path) != ":memory:":  # ":memory:": nothing persisted (tests, benchmarks)
                Path(path).mkdir(parents=True, exist_ok=True)
            try:
                # the API serves requests from a thread pool: sqlite must accept other threads;
                # self._lock serialises every call instead
                self.client = QdrantClient(path=str(path), force_disable_check_same_thread=True)
            except RuntimeError as exc:
                raise StoreLockedError(path) from exc
        else:
            assert url is not None
            self.backend = "server"
            self.location = url
            # no version probe at construction: the API must start even while the server is still
            # coming up; the first request reports an unreachable server
            self.client = QdrantClient(
                url=url, api_key=api_key, timeout=timeout, check_compatibility=False
            )

    # -- helpers
    def _models(self) -> Any:
        from qdrant_client import models

        return models

    def _exists(self, name: str) -> bool:
        """True for a real collection (``collection_exists`` also answers True for an alias)."""
        return name in {c.name for c in self.client.get_collections().collections}

    def _aliases(self) -> dict[str, str]:
        return {a.alias_name: a.collection_name for a in self.client.get_aliases().aliases}

    def _check(self, name: str, *, alias: bool = True) -> None:
        """Raise :class:`CollectionNotFoundError` unless ``name`` is a collection (or, with
        ``alias``, an alias)."""
        if not self._exists(name) and not (alias and name in self._aliases()):
            raise CollectionNotFoundError(name)

    # -- interface
    def _create_collection(self, name: str, spec: CollectionSpec) -> None:
        m = self._models()
        with self._lock:
            if self._exists(name) or name in self._aliases():
                raise CollectionExistsError(name)
            vectors, sparse = spec.engine_vectors(
                lambda dim: m.VectorParams(size=dim, distance=m.Distance.COSINE),
                lambda: m.SparseVectorParams(modifier=m.Modifier.IDF),
            )
            self.client.create_collection(
                name,
                vectors_config=vectors,
                sparse_vectors_config=sparse,
                metadata=dict(spec.meta) if spec.meta else None,
            )
            if self.backend == "server":
                for field, kind in spec.payload_indexes.items():
                    self.client.create_payload_index(
                        name, field, field_schema=m.PayloadSchemaType(kind), wait=True
                    )

    def _sparse_vector(self, vector: SparseVector) -> Any:
        return self._models().SparseVector(indices=list(vector.indices), values=list(vector.values))

    def _point(self, point: Point, vectors: dict[str, Any]) -> Any:
        return self._models().PointStruct(id=point.id, vector=vectors, payload=point.payload)

    def _upsert(self, collection: str, points: list[Any]) -> None:
        with self._lock:
            self._check(collection, alias=False)
            self.client.upsert(collection, points=points, wait=True)

    def count(self, collection: str) -> int:
        with self._lock:
            self._check(collection)
            return int(self.client.count(collection, exact=True).count)

    def _dense_request(self, vector: list[float], using: str, limit: int, filter: Any) -> Any:
        return self._models().QueryRequest(
            query=vector, using=using, limit=limit, filter=filter, with_payload=True
        )

    def _sparse_request(self, query: SparseVector, using: str, limit: int, filter: Any) -> Any:
        return self._models().QueryRequest(
            query=self._sparse_vector(query), using=using, limit=limit, filter=filter,
            with_payload=True,
        )  # fmt: skip

    def _hybrid_request(self, query: HybridQuery, limit: int, filter: Any) -> Any:
        m = self._models()
        candidates = max(query.fusion.prefetch, limit)
        sparse = self._sparse_vector(query.sparse)
        return m.QueryRequest(
            prefetch=[
                m.Prefetch(query=query.dense, using=query.using, limit=candidates, filter=filter),
                m.Prefetch(query=sparse, using=query.sparse_using, limit=candidates, filter=filter),
            ],
            query=self._fusion_query(query.fusion),
            limit=limit,
            with_payload=True,
        )

    def _run(self, collection_or_alias: str, requests: Sequence[Any]) -> list[list[Hit]]:
        with self._lock:
            self._check(collection_or_alias)
            responses = self.client.query_batch_points(collection_or_alias, requests=requests)
        return [[Hit.scored(p) for p in r.points] for r in responses]

    def _run_groups(
        self, collection_or_alias: str, requests: Sequence[Any], *, group_by: str, groups: int,
        group_size: int,
    ) -> list[list[Hit]] | None:  # fmt: skip
        """Qdrant's ``query_points_groups`` (one call per query: there is no batch of groups)
        for dense and sparse requests. Hybrid requests (prefetches) are grouped client side
        instead: local mode's ``query_groups`` widens every prefetch to the whole collection,
        which changes RRF ranks and DBSF normalisation, so a document's score would not be its
        best chunk's score in the chunk ranking; one client-side path keeps local and server
        alike."""
        if any(r.prefetch for r in requests):
            return None
        out: list[list[Hit]] = []
        with self._lock:
            self._check(collection_or_alias)
            for r in requests:
                result = self.client.query_points_groups(
                    collection_or_alias, group_by=group_by, query=r.query, using=r.using,
                    query_filter=r.filter, limit=groups, group_size=group_size,
                    with_payload=True,
                )  # fmt: skip
                hits = []
                for g in result.groups:
                    members = sorted((Hit.scored(p) for p in g.hits), key=rank_key)
                    if members:
                        hits.append(replace(members[0], passages=tuple(members)))
                out.append(hits)
        return out

    def _fusion_query(self, fusion: Fusion) -> Any:
        m = self._models()
        if fusion.method == "rrf":
            return m.RrfQuery(rrf=m.Rrf(k=fusion.k))
        if fusion.method == "dbsf":
            return m.FusionQuery(fusion=m.Fusion.DBSF)
        w, c = fusion.weight, fusion.scale
        squashed = m.DivExpression(
            div=m.DivParams(left="$score[1]", right=m.SumExpression(sum=["$score[1]", c]))
        )
        return m.FormulaQuery(
            formula=m.SumExpression(
                sum=[
                    m.MultExpression(mult=[w, "$score[0]"]),
                    m.MultExpression(mult=[1.0 - w, squashed]),
                ]
            ),
            defaults={"$score[0]": 0.0, "$score[1]": 0.0},
        )

    def sparse_names(self, collection: str) -> tuple[str, ...]:
        with self._lock:
            self._check(collection, alias=False)
            sparse = self.client.get_collection(collection).config.params.sparse_vectors
            return tuple(sorted(sparse or {}))

    def collection_meta(self, collection_or_alias: str) -> dict[str, Any]:
        with self._lock:
            name = self.resolve(collection_or_alias)
            meta = self.client.get_collection(name).config.metadata
            return dict(meta or {})

    def update_collection_meta(self, collection_or_alias: str, meta: Mapping[str, Any]) -> None:
        with self._lock:
            name = self.resolve(collection_or_alias)
            self.client.update_collection(name, metadata=dict(meta))

    def retrieve_vectors(
        self, collection_or_alias: str, ids: Sequence[str], names: Sequence[str]
    ) -> dict[str, dict[str, np.ndarray]]:
        if not ids:
            return {}
        with self._lock:
            self._check(collection_or_alias)
            records = self.client.retrieve(
                collection_or_alias, ids=list(ids), with_vectors=list(names), with_payload=False
            )
        out: dict[str, dict[str, np.ndarray]] = {}
        for r in records:
            stored: Any = r.vector  # a dict of the requested named vectors
            out[str(r.id)] = {n: np.asarray(stored[n], dtype=np.float32) for n in names}
        return out

    def get_alias(self, alias: str) -> str | None:
        with self._lock:
            return self._aliases().get(alias)

    def switch_alias(self, alias: str, collection: str) -> None:
        check_name(alias, "alias")
        m = self._models()
        with self._lock:
            self._check(collection, alias=False)
            if self._exists(alias):
                raise ValueError(f"alias {alias!r} would shadow a collection of that name")
            ops: list[Any] = []
            if alias in self._aliases():
                ops.append(m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=alias)))
            ops.append(
                m.CreateAliasOperation(
                    create_alias=m.CreateAlias(collection_name=collection, alias_name=alias)
                )
            )
            # one request: the server applies the list atomically; local mode saves once
            self.client.update_collection_aliases(change_aliases_operations=ops)

    def delete_alias(self, alias: str) -> None:
        m = self._models()
        with self._lock:
            if alias in self._aliases():
                self.client.update_collection_aliases(
                    change_aliases_operations=[
                        m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=alias))
                    ]
                )

    def has_collection(self, name: str) -> bool:
        with self._lock:
            return bool(self.client.collection_exists(name))

    def list_collections(self) -> list[CollectionInfo]:
        with self._lock:
            aliases = self._aliases()
            out = []
            for c in sorted(self.client.get_collections().collections, key=lambda c: c.name):
                info = self.client.get_collection(c.name)
                params = info.config.params.vectors
                if isinstance(params, Mapping):
                    vectors = {k: int(v.size) for k, v in params.items()}
                elif params is not None:
                    vectors = {"": int(params.size)}
                else:
                    vectors = {}
                sparse = info.config.params.sparse_vectors or {}
                out.append(
                    CollectionInfo(
                        name=c.name,
                        aliases=sorted(a for a, t in aliases.items() if t == c.name),
                        points=int(self.client.count(c.name, exact=True).count),
                        vectors=vectors,
                        sparse=tuple(sorted(sparse)),
                        complete=build_complete(info.config.metadata),
                    )
                )
            return out

    def delete_collection(self, name: str) -> None:
        with self._lock:
            for alias, target in self._aliases().items():
                if target == name:
                    self.delete_alias(alias)
            self.client.delete_collection(name)

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                self.client.close()

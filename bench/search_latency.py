"""Query latency of the embedded store backends, side by side, through the Store interface.

For each backend (qdrant-client local mode, qdrant-edge) and collection size: fill a fresh store
with unit vectors (plus a small payload), build indexes (``Store.optimize``), then time
single-query ``Store.search`` calls one by one: p50 / p99 / mean latency, and recall@k against
exact numpy search (edge uses HNSW, which is approximate; one row per ``--hnsw-ef``). A filtered
run (payload match that keeps ~10% of the points) is timed too.

``--data random``: i.i.d. Gaussian directions, the worst case for HNSW (no structure at all).
``--data lowrank`` (default): vectors from a 48-dimensional subspace plus 10% isotropic noise,
closer to real text embeddings, whose variance sits in few directions.

    .venv/bin/python bench/search_latency.py                 # 10k and 100k points, 576-d
    .venv/bin/python bench/search_latency.py --quick         # 2k and 10k points
    .venv/bin/python bench/search_latency.py --sizes 50000 --backends edge --hnsw-ef 64 128 256

Prints a table and writes JSON to bench/out/search_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.store import Point, QdrantClientStore, Store

OUT = Path(__file__).resolve().parent / "out"


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_data(kind: str, seed: int, n: int, queries: int, dim: int) -> tuple[np.ndarray, ...]:
    """(points, queries), unit-normalised."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        return unit_vectors(rng, n, dim), unit_vectors(rng, queries, dim)
    basis = rng.standard_normal((48, dim), dtype=np.float32)

    def draw(m: int) -> np.ndarray:
        z = rng.standard_normal((m, 48), dtype=np.float32) @ basis
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        z += 0.1 * unit_vectors(rng, m, dim)
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        return z

    return draw(n), draw(queries)


def open_backend(name: str, folder: Path) -> Store:
    if name == "local":
        return QdrantClientStore(path=folder / "qdrant")
    if name == "edge":
        from indexer.edge_store import EdgeStore

        return EdgeStore(folder / "edge")
    raise SystemExit(f"unknown backend {name!r}")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def fill(store: Store, ids: list[str], data: np.ndarray, buckets: np.ndarray, batch: int) -> float:
    """Upsert every point in batches; returns the seconds it took."""
    started = time.perf_counter()
    for s in range(0, len(ids), batch):
        store.upsert(
            "bench",
            [
                Point(ids[i], {"dense": data[i]}, {"i": i, "bucket": int(buckets[i])})
                for i in range(s, min(s + batch, len(ids)))
            ],
        )
    return time.perf_counter() - started


def timed_search(
    store: Store,
    qvecs: np.ndarray,
    top_k: int,
    filter: dict[str, Any] | None,
    max_seconds: float,
) -> tuple[list[float], list[list[str]]]:
    lat: list[float] = []
    got: list[list[str]] = []
    deadline = time.perf_counter() + max_seconds
    for v in qvecs:
        t = time.perf_counter()
        hits = store.search("bench", v, top_k=top_k, filter=filter)
        lat.append((time.perf_counter() - t) * 1000)
        got.append([h.id for h in hits])
        if len(lat) >= 5 and time.perf_counter() > deadline:
            break
    return lat, got


def recall(exact: np.ndarray, got: list[list[str]], ids: list[str], top_k: int) -> float:
    return float(
        np.mean([len({ids[j] for j in exact[q]} & set(g)) / top_k for q, g in enumerate(got)])
    )


def run_one(backend: str, n: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    dim, top_k = args.dim, args.top_k
    data, qvecs = make_data(args.data, args.seed, n, args.queries, dim)
    buckets = np.random.default_rng(args.seed + 2).integers(0, 10, size=n)
    ids = [str(uuid.uuid5(uuid.NAMESPACE_OID, str(i))) for i in range(n)]
    sims = qvecs @ data.T
    exact = np.argsort(-sims, axis=1)[:, :top_k]
    fexact = np.argsort(-np.where(buckets[None, :] == 3, sims, -np.inf), axis=1)[:, :top_k]
    fq = qvecs[: args.filtered_queries]
    rows = []
    notes: list[str] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix=f"bench-{backend}-") as tmp:
        store = open_backend(backend, Path(tmp))
        try:
            store.create_collection("bench", {"dense": dim}, payload_indexes={"bucket": "integer"})
            if backend == "local" and n > args.local_upsert_sample:
                # local mode commits every point to sqlite (~ms each): time a sample on disk, then
                # search an in-memory local store - the same numpy search code, only upsert
                # persists (qdrant_client/local/local_collection.py)
                k = args.local_upsert_sample
                upsert_rate = k / fill(store, ids[:k], data[:k], buckets[:k], args.batch)
                store.close()
                store = QdrantClientStore(path=":memory:")
                store.create_collection("bench", {"dense": dim})
                fill(store, ids, data, buckets, args.batch)
                notes.append(f"upsert/s from {k} points on disk, searched in :memory:")
            else:
                upsert_rate = n / fill(store, ids, data, buckets, args.batch)
            started = time.perf_counter()
            store.optimize("bench")
            build_s = time.perf_counter() - started
            for v in qvecs[:5]:  # warm-up
                store.search("bench", v, top_k=top_k)
            efs: list[int | None] = list(args.hnsw_ef) if backend == "edge" else [None]
            for ef in efs:
                if ef is not None:
                    store.hnsw_ef = ef  # type: ignore[attr-defined]
                lat, got = timed_search(store, qvecs, top_k, None, args.max_seconds)
                flat, fgot = timed_search(store, fq, top_k, {"bucket": 3}, args.max_seconds)
                rows.append(
                    {
                        "backend": backend if ef is None else f"edge ef={ef}",
                        "data": args.data,
                        "points": n,
                        "dim": dim,
                        "queries": len(lat),
                        "filtered_queries": len(flat),
                        "top_k": top_k,
                        "hnsw_ef": ef,
                        "upsert_points_per_s": upsert_rate,
                        "build_s": build_s,
                        "p50_ms": percentile(lat, 50),
                        "p99_ms": percentile(lat, 99),
                        "mean_ms": float(np.mean(lat)),
                        "recall_at_k": recall(exact, got, ids, top_k),
                        "filtered_p50_ms": percentile(flat, 50),
                        "filtered_p99_ms": percentile(flat, 99),
                        "filtered_recall_at_k": recall(fexact, fgot, ids, top_k),
                        "load_avg_1m": [load_before, os.getloadavg()[0]],
                        "notes": [
                            *notes,
                            *(
                                [f"{len(lat)}/{len(flat)} queries (--max-seconds)"]
                                if len(lat) < len(qvecs) or len(flat) < len(fq)
                                else []
                            ),
                        ],
                    }
                )
        finally:
            store.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--quick", action="store_true", help="sizes 2k and 10k, 100 queries")
    parser.add_argument("--dim", type=int, default=576, help="576 = SmolLM2-135M hidden size")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument(
        "--filtered-queries", type=int, default=30, help="queries timed with a payload filter"
    )
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=90.0,
        help="stop a timed loop after this (>= 5 queries)",
    )
    parser.add_argument(
        "--local-upsert-sample",
        type=int,
        default=3000,
        help="local mode: points upserted on disk to time upserts (the rest in :memory:)",
    )
    parser.add_argument("--backends", nargs="+", default=["local", "edge"])
    parser.add_argument("--data", choices=["lowrank", "random"], default="lowrank")
    parser.add_argument(
        "--hnsw-ef", type=int, nargs="+", default=[128], help="edge: HNSW ef values to time"
    )
    parser.add_argument("--batch", type=int, default=1000, help="points per upsert")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT / "search_latency.json")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.queries = [2_000, 10_000], 100

    args.filtered_queries = min(args.filtered_queries, args.queries)
    rows: list[dict[str, Any]] = []
    header = (
        f"{'backend':<12} {'points':>7} {'upsert/s':>9} {'build s':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'mean ms':>8} {'recall':>6} "
        f"{'filt p50':>8} {'filt p99':>8} {'f.recall':>8}  load"
    )
    print(f"data={args.data} dim={args.dim} top_k={args.top_k}", flush=True)
    print(header, flush=True)
    for n in args.sizes:
        for backend in args.backends:
            for r in run_one(backend, n, args):
                rows.append(r)
                print(
                    f"{r['backend']:<12} {r['points']:>7} "
                    f"{r['upsert_points_per_s']:>9.0f} {r['build_s']:>8.1f} {r['p50_ms']:>7.2f} "
                    f"{r['p99_ms']:>7.2f} {r['mean_ms']:>8.2f} {r['recall_at_k']:>6.3f} "
                    f"{r['filtered_p50_ms']:>8.2f} {r['filtered_p99_ms']:>8.2f} "
                    f"{r['filtered_recall_at_k']:>8.3f}  {r['load_avg_1m'][1]:.1f}"
                    + ("  (" + "; ".join(r["notes"]) + ")" if r["notes"] else ""),
                    flush=True,
                )

    result = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_at_end": os.getloadavg(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "versions": {
            "qdrant-client": _version("qdrant-client"),
            "qdrant-edge-py": _version("qdrant-edge-py"),
        },
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    main()

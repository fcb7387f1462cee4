"""Hybrid search on full SciFact: Qdrant's BM25 (sparse), dense, and dense + BM25 fused by
Qdrant (RRF k=60, DBSF, and the weighted formula fitted on SciFact *train*), for each encoder.

    python bench/hybrid.py --encoder "all-MiniLM-L6-v2=minilm"
    python bench/hybrid.py --encoder "SmolLM2 ember=smollm2-ember" --dtype bfloat16

For each encoder: the fusion is fitted on ``qrels/train.tsv`` (``ember eval fit-fusion``'s
grid); test queries are only scored, never used to choose anything. Rows are merged into
``bench/out/quality.json`` (label ``<encoder label> + BM25 hybrid <fusion>``) and the full fit
tables go to ``bench/out/hybrid.json``. Document vectors come from the eval cache
(``.ember/eval-cache``), shared with bench/quality.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data" / "beir" / "scifact"
QUALITY = ROOT / "bench" / "out" / "quality.json"
OUT = ROOT / "bench" / "out" / "hybrid.json"


def _merge(path: Path, rows: dict[str, dict[str, Any]], extra: dict[str, Any]) -> None:
    data = json.loads(path.read_text()) if path.exists() else {"results": {}}
    for label, entry in rows.items():
        data.setdefault("results", {}).setdefault(label, {}).update(entry)
    data.update(extra)
    data["updated"] = datetime.now(UTC).isoformat(timespec="seconds")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def _entry(result: Any, dtype: str | None, **extra: Any) -> dict[str, Any]:
    d = result.as_dict()
    d.update(extra)
    if dtype:
        d["dtype"] = dtype
    return d


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--encoder", action="append", default=[], help="LABEL=SPEC (repeatable)")
    p.add_argument("--dtype", default=None, help="encode in this dtype (e.g. bfloat16)")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--no-sparse", action="store_true", help="skip the Qdrant BM25 row")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)

    from encoders import Encoder
    from encoders.registry import resolve_config
    from indexer.evaluation import default_instruction, load_beir
    from indexer.evaluation.beir import evaluate_dense
    from indexer.evaluation.cache import VectorCache, default_cache_dir
    from indexer.evaluation.hybrid import evaluate_hybrid, evaluate_sparse, fit_fusion
    from indexer.sparse import Fusion

    test = load_beir(args.data, "test")
    train = load_beir(args.data, "train")
    cache = VectorCache(default_cache_dir())
    rows: dict[str, dict[str, Any]] = {}
    fits: dict[str, Any] = {}
    table: list[tuple[str, float]] = []
    if not args.no_sparse:
        t = time.perf_counter()
        sparse = evaluate_sparse(test)
        rows["Qdrant BM25 (sparse)"] = {
            "scifact": _entry(sparse, None, seconds=round(time.perf_counter() - t, 1))
        }
        table.append(("Qdrant BM25 (sparse)", sparse.scores.ndcg_at_10))
    for item in args.encoder:
        label, _, spec = item.partition("=")
        config = resolve_config(spec or label)
        if args.dtype:
            config = config.model_copy(update={"dtype": args.dtype})
        encoder = Encoder.from_config(config)
        instruction = default_instruction(encoder, "scifact")
        t = time.perf_counter()
        dense = evaluate_dense(
            encoder, test, instruction=instruction, cache=cache, show_progress=args.progress
        )
        rows[label] = {"scifact": _entry(dense, args.dtype, mode="dense")}
        table.append((label, dense.scores.ndcg_at_10))
        fit = fit_fusion(
            encoder, train, instruction=instruction, cache=cache, show_progress=args.progress
        )
        fits[label] = {"train": fit.as_dict(), "spec": spec}
        fitted = fit.best
        candidates = [Fusion("rrf", k=60), Fusion("dbsf")]
        best_weighted = max(
            (r for r in fit.table if r["method"] == "weighted"), key=lambda r: r["ndcg@10"]
        )
        candidates.append(Fusion.from_dict(best_weighted))
        results = evaluate_hybrid(
            encoder, test, instruction=instruction, fusions=candidates, cache=cache
        )
        for fusion, result in zip(candidates, results, strict=True):
            if fusion.method == "weighted":
                name = f"weighted w={fusion.weight:g} c={fusion.scale:g} (fitted on train)"
            elif fusion.method == "rrf":
                name = f"RRF k={fusion.k}"
            else:
                name = "DBSF"
            row = f"{label} + BM25 hybrid {name}"
            chosen = fusion == fitted
            rows[row] = {
                "scifact": _entry(
                    result,
                    args.dtype,
                    chosen_on_train=chosen,
                    train_ndcg_at_10=next(
                        r["ndcg@10"] for r in fit.table if Fusion.from_dict(r) == fusion
                    ),
                )
            }
            table.append((row + (" [chosen on train]" if chosen else ""), result.scores.ndcg_at_10))
        print(f"{label}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    _merge(QUALITY, rows, {})
    old = json.loads(OUT.read_text()) if OUT.exists() else {}
    old.update(fits)
    OUT.write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")
    print(f"{'row (full SciFact test)':<90} nDCG@10")
    for name, ndcg in table:
        print(f"{name:<90} {100 * ndcg:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

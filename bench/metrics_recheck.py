"""Re-check the quality table's retrieval numbers with the trec_eval metrics, without encoding.

``bench/out/quality.json`` holds numbers computed by the hand-written metrics that
``indexer/evaluation/metrics.py`` replaced with trec_eval (``pytrec_eval``). This script re-scores
every row it can cheaply:

- BM25: re-run (a few seconds per set);
- encoder rows: re-scored from the vector cache when the row's fingerprint folder holds the
  document and query vectors of that set (matched by row count and instruction in the
  sidecars); rows whose vectors are not cached are listed as skipped (re-encoding them costs up
  to hours on a CPU).

Each cell is scored twice: ``ranked`` keeps Ember's own order (equal scores by document index,
what the old code scored) and isolates a change of definitions; ``trec`` hands the scores to
trec_eval (equal scores by doc id, descending), what ``ember eval beir`` now reports. Any cell
that moves by more than ``--threshold`` (in points, default 0.05) is flagged. With
``--old-metrics`` (a copy of the hand-written module, from before the switch) a third score,
``old``, applies the hand-written code to the same ranking: when a cell moves but ``old`` moves
with it, the vectors differ from those of the table (e.g. another dtype in the cache), not the
metrics.

    git show c697400^:indexer/evaluation/metrics.py > /tmp/old_metrics.py
    python bench/metrics_recheck.py --cache-dir .ember/eval-cache --old-metrics /tmp/old_metrics.py
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SCIFACT_SETS = {"scifact": "beir/scifact", "scifact-mini": "beir/scifact-mini"}
METRICS = ("ndcg@10", "recall@100", "mrr@10")


def cached_vectors(folder: Path, rows: int, instruction: str | None) -> np.ndarray | None:
    """The one cached array in ``folder`` with ``rows`` rows and this instruction, if unique."""
    found = []
    for sidecar in sorted(folder.glob("*.json")):
        info = json.loads(sidecar.read_text())
        if info.get("rows") == rows and info.get("instruction") == instruction:
            found.append(sidecar.with_suffix(".npy"))
    if len(found) != 1 or not found[0].is_file():
        return None
    return np.load(found[0])


def compare(old: dict[str, Any], new: dict[str, float]) -> dict[str, Any]:
    return {m: {"old": old.get(m), "new": new[m]} for m in METRICS}


def moved(cells: dict[str, Any], threshold: float) -> list[str]:
    out = []
    for variant, values in cells.items():
        for metric, v in values.items():
            if v["old"] is not None and abs(100 * (v["new"] - v["old"])) > threshold:
                out.append(f"{variant} {metric} {100 * v['old']:.2f} -> {100 * v['new']:.2f}")
    return out


def main() -> int:
    from indexer.evaluation import default_data_dir, load_beir
    from indexer.evaluation.beir import TOP_K, dense_run, evaluate_bm25
    from indexer.evaluation.metrics import score_run, score_scored_run, trec_order
    from indexer.evaluation.retrieval import BM25Index

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quality", default=str(ROOT / "bench" / "out" / "quality.json"))
    p.add_argument("--cache-dir", default=str(ROOT / ".ember" / "eval-cache"))
    p.add_argument("--data-dir", default=str(default_data_dir()))
    p.add_argument("--threshold", type=float, default=0.05, help="points (x100) to flag")
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "metrics_recheck.json"))
    p.add_argument("--old-metrics", default=None, help="the hand-written metrics module (a file)")
    args = p.parse_args()
    old_score_run = None
    if args.old_metrics:
        spec = importlib.util.spec_from_file_location("old_metrics", args.old_metrics)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["old_metrics"] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        old_score_run = module.score_run

    results = json.loads(Path(args.quality).read_text())["results"]
    datasets = {n: load_beir(Path(args.data_dir) / sub) for n, sub in SCIFACT_SETS.items()}
    cache = Path(args.cache_dir)
    report: dict[str, Any] = {}
    skipped: list[str] = []
    flagged: list[str] = []

    for label, entry in results.items():
        for name, ds in datasets.items():
            old = entry.get(name)
            if not isinstance(old, dict) or "ndcg@10" not in old:
                continue
            qids = ds.eval_query_ids
            if old.get("system") == "bm25":
                index = BM25Index(ds.doc_texts)
                idx, _ = index.search([ds.queries[q] for q in qids], TOP_K)
                ranked = {q: [ds.doc_ids[j] for j in row] for q, row in zip(qids, idx, strict=True)}
                trec = evaluate_bm25(ds).scores
            else:
                folder = cache / str(entry.get("encoder", {}).get("fingerprint"))
                docs = cached_vectors(folder, len(ds.doc_ids), None)
                queries = cached_vectors(folder, len(qids), old.get("instruction"))
                if docs is None or queries is None:
                    skipped.append(f"{label} / {name}")
                    continue
                run = dense_run(ds, queries, docs)
                # Ember's own order: what exact_top_k returned, equal scores by document index
                ranked = {q: [d for d, _ in docs_] for q, docs_ in run.items()}
                trec = score_scored_run(run, ds.qrels)
                ties = sum(len(trec_order(d)) != len({s for _, s in d}) for d in run.values())
                report.setdefault(label, {}).setdefault(name, {})["queries_with_ties"] = ties
            cells = {
                "ranked": compare(old, score_run(ranked, ds.qrels).as_dict()),
                "trec": compare(old, trec.as_dict()),
            }
            if old_score_run is not None:
                cells["old"] = compare(old, old_score_run(ranked, ds.qrels).as_dict())
            report.setdefault(label, {}).setdefault(name, {}).update(cells)
            for line in moved(cells, args.threshold):
                flagged.append(f"{label} / {name}: {line}")
            print(f"{label} / {name}: " + "; ".join(
                f"{m} {100 * cells['trec'][m]['old']:.2f} -> {100 * cells['trec'][m]['new']:.2f}"
                f" (ranked {100 * cells['ranked'][m]['new']:.2f}"
                + (f", old code {100 * cells['old'][m]['new']:.2f})" if "old" in cells else ")")
                for m in METRICS
            ))  # fmt: skip

    out = {"rows": report, "skipped_not_cached": skipped, "moved": flagged}
    out["threshold_points"] = args.threshold
    Path(args.out).write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    print(f"skipped (vectors not cached): {len(skipped)}")
    for s in skipped:
        print(f"  {s}")
    print(f"moved by more than {args.threshold} points: {len(flagged)}")
    for f in flagged:
        print(f"  {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

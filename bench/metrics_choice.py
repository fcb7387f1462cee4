"""Which IR-metrics library scores Ember's runs: speed and agreement on a SciFact-sized run.

A synthetic run shaped like full SciFact (300 judged queries, 5,183 documents, 1-5 relevant
documents per query with graded relevance 1-2, 100 retrieved documents per query, scores rounded
so that about a third of the retrieved lists hold tied scores) is scored for nDCG@10, recall@100
and MRR@10 by each library that is installed:

- ``pytrec_eval`` (package ``pytrec-eval-terrier``): trec_eval's own C code;
- ``ir_measures`` (pytrec_eval underneath for these measures, plus its own parsing);
- ``ranx`` (numba-compiled; the first call pays the JIT compilation, reported apart);
- the per-query values are compared with trec_eval's definitions (the reference is pytrec_eval:
  the same C code as the ``trec_eval`` binary), including its tie rule (equal scores ordered by
  document id, descending).

    python bench/metrics_choice.py [--repeat 5] [--no-ties]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable

import numpy as np

N_QUERIES, N_DOCS, DEPTH = 300, 5183, 100
PerQuery = dict[str, dict[str, float]]
Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


def synthetic(seed: int = 0, decimals: int | None = 2) -> tuple[Run, Qrels]:
    rng = np.random.default_rng(seed)
    run: Run = {}
    qrels: Qrels = {}
    for q in range(N_QUERIES):
        qid = f"q{q}"
        rel_docs = rng.choice(N_DOCS, size=int(rng.integers(1, 6)), replace=False)
        qrels[qid] = {f"d{d}": int(rng.integers(1, 3)) for d in rel_docs}
        retrieved = list(rng.choice(N_DOCS, size=DEPTH, replace=False))
        for d in rel_docs:  # most relevant documents are retrieved, somewhere in the list
            if rng.random() < 0.8 and d not in retrieved:
                retrieved[int(rng.integers(0, DEPTH))] = d
        scores = np.sort(rng.random(DEPTH))[::-1]
        if decimals is not None:  # rounded scores: ties
            scores = np.round(scores, decimals)
        run[qid] = {f"d{d}": float(s) for d, s in zip(retrieved, scores, strict=True)}
    return run, qrels


def with_pytrec_eval(run: Run, qrels: Qrels) -> PerQuery:
    import pytrec_eval

    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"})
    # MRR@10 = trec_eval's recip_rank on the run cut to its first 10 (trec_eval order)
    cut = {
        q: dict(sorted(d.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:10])
        for q, d in run.items()
    }
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
    out = ev.evaluate(run)
    return {
        q: {
            "ndcg@10": v["ndcg_cut_10"],
            "recall@100": v["recall_100"],
            "mrr@10": rr[q]["recip_rank"],
        }
        for q, v in out.items()
    }


def with_ir_measures(run: Run, qrels: Qrels) -> PerQuery:
    import ir_measures
    from ir_measures import RR, R, nDCG

    out: PerQuery = {}
    for m in ir_measures.iter_calc([nDCG @ 10, R @ 100, RR @ 10], qrels, run):
        name = {"nDCG@10": "ndcg@10", "R@100": "recall@100", "RR@10": "mrr@10"}[str(m.measure)]
        out.setdefault(m.query_id, {})[name] = float(m.value)
    return out


def with_ranx(run: Run, qrels: Qrels) -> PerQuery:
    from ranx import Qrels as RQrels
    from ranx import Run as RRun
    from ranx import evaluate

    metrics = ["ndcg@10", "recall@100", "mrr@10"]
    r = RRun(run)
    evaluate(RQrels(qrels), r, metrics, return_mean=False)
    return {q: {m: float(r.scores[m][q]) for m in metrics} for q in run}


def timed(fn: Callable[[Run, Qrels], PerQuery], run: Run, qrels: Qrels, repeat: int):
    start = time.perf_counter()
    first = fn(run, qrels)
    first_s = time.perf_counter() - start
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(run, qrels)
        times.append(time.perf_counter() - start)
    return first, first_s, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-ties", action="store_true", help="Do not round the scores.")
    args = parser.parse_args()
    run, qrels = synthetic(decimals=None if args.no_ties else 2)
    tied = sum(len(set(d.values())) < len(d) for d in run.values())
    print(f"{N_QUERIES} queries x {DEPTH} docs; {tied} queries with tied scores")
    libs = {"pytrec_eval": with_pytrec_eval, "ir_measures": with_ir_measures, "ranx": with_ranx}
    reference = None
    for name, fn in libs.items():
        if importlib.util.find_spec(name) is None:
            print(f"{name:12s} not installed")
            continue
        values, first_s, warm_s = timed(fn, run, qrels, args.repeat)
        if reference is None:
            reference = values
        worst = max(abs(values[q][m] - reference[q][m]) for q in reference for m in reference[q])
        differ = sum(
            any(abs(values[q][m] - reference[q][m]) > 1e-12 for m in reference[q])
            for q in reference
        )
        means = {
            m: statistics.fmean(v[m] for v in values.values()) for m in next(iter(values.values()))
        }
        mean_txt = ", ".join(f"{m} {x:.6f}" for m, x in means.items())
        print(
            f"{name:12s} first call {1000 * first_s:8.1f} ms, warm median {1000 * warm_s:7.1f} ms; "
            f"{differ} queries differ from trec_eval (max |diff| {worst:.2e}); {mean_txt}"
        )


if __name__ == "__main__":
    main()

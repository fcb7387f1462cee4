"""/search latency idle vs during an in-process index job, with the job thread lowered or not.

Indexes ``--docs`` SciFact-mini documents (``../shared/data``) into an embedded store, then for
each mode starts ``ember serve`` (embedded: no broker, so ``POST /jobs/index`` runs the job on
the API's background job thread) and measures ``/search`` with ``--clients`` closed-loop clients:

1. ``idle``: ``--duration`` s of searches, nothing else running;
2. ``indexing``: ``POST /jobs/index`` of ``--job-docs`` more documents (a corpus path), then
   ``--duration`` s of searches while the job runs (the job's progress is read at the end, so
   the table shows whether it really ran through the whole window).

Modes: ``lowered`` is the default server (the job thread at nice +``EMBER_JOB_NICE`` and half the
torch threads, :mod:`workers.priority`); ``equal`` sets ``EMBER_JOB_NICE=0`` and gives the job
thread as many torch threads as search, which is how in-process jobs ran before. The server is
stopped after each mode (a job still running is killed with it).

    nice .venv/bin/python bench/search_during_index.py --encoder minilm --duration 20

Prints a table and writes JSON to bench/out/search_during_index-<encoder>.json. Numbers from a
host busy with other work are indicative only; the load average is recorded with each phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import api_load  # bench/ is not a package: imported from its folder

ROOT = api_load.ROOT
OUT = api_load.OUT
MODES = {
    "lowered": {},  # the shipped defaults
    "equal": {"EMBER_JOB_NICE": "0"},  # + EMBER_JOB_TORCH_THREADS = the server's threads
}


def start_server(args: argparse.Namespace, data_dir: Path, mode: str) -> tuple[Any, str]:
    env = {"EMBER_JOB_INPUT_DIR": str(data_dir), "EMBER_SEARCH_MODE": "dense", **MODES[mode]}
    if mode == "equal":
        env["EMBER_JOB_TORCH_THREADS"] = str(args.torch_threads)
    return api_load.start_server(
        args.encoder, data_dir, env, "--torch-threads", str(args.torch_threads)
    )


def stop_server(server: Any) -> None:
    api_load.stop_server(server, timeout=15)  # waiting for the job thread: the job dies with it


def searches(args: argparse.Namespace, url: str, queries: list[str]) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    result = asyncio.run(
        api_load.load(url, queries, args.clients, args.duration, 100_000, args.top_k)
    )
    result["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return result


def run_mode(
    args: argparse.Namespace, data_dir: Path, mode: str, queries: list[str]
) -> list[dict[str, Any]]:
    import httpx

    server, url = start_server(args, data_dir, mode)
    try:
        asyncio.run(api_load.load(url, queries, 2, 2.0, 40, args.top_k))  # warm-up, not measured
        idle = {"mode": mode, "phase": "idle", **searches(args, url, queries)}
        job = httpx.post(
            f"{url}/jobs/index",
            json={"collection": f"bulk-{mode}", "path": "job.jsonl", "chunk_tokens": 128,
                  "batch_docs": 16},
            timeout=30,
        )  # fmt: skip
        job.raise_for_status()
        job_id = job.json()["id"]
        during = {"mode": mode, "phase": "indexing", **searches(args, url, queries)}
        progress = httpx.get(f"{url}/jobs/{job_id}", timeout=30).json()
        during["job"] = {
            "state": progress["state"],
            "documents_done": progress["progress"]["documents_done"],
            "documents_total": progress["progress"]["documents_total"],
            "rate_docs_per_s": progress["progress"]["rate_docs_per_s"],
        }
        return [idle, during]
    finally:
        stop_server(server)


def main() -> None:
    p = api_load.load_options(
        __doc__, encoder="minilm", clients=4, per="phase", docs="served before the job"
    )
    p.add_argument("--job-docs", type=int, default=2000, help="documents the index job indexes")
    p.add_argument("--torch-threads", type=int, default=max(1, min(os.cpu_count() or 1, 4)))
    p.add_argument("--modes", default="lowered,equal", help=f"of {', '.join(MODES)}, in order")
    args = p.parse_args()
    if not api_load.SCIFACT_MINI.is_dir():
        raise SystemExit(f"SciFact-mini not found at {api_load.SCIFACT_MINI}")
    queries = [q["text"] for q in api_load.read_jsonl(api_load.SCIFACT_MINI / "queries.jsonl")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ember-search-during-index-") as tmp:
        data_dir = Path(tmp)
        print(f"indexing {args.docs} SciFact-mini docs with {args.encoder} ...", file=sys.stderr)
        index = api_load.build_index(data_dir, args.encoder, args.docs, 128)
        corpus = api_load.read_jsonl(api_load.SCIFACT_MINI / "corpus.jsonl")
        rest = corpus[args.docs :] or corpus
        job_rows = [  # cycled with fresh ids when the job wants more than SciFact-mini has
            {**row, "_id": f"{row['_id']}-{n // len(rest)}"}
            for n, row in ((n, rest[n % len(rest)]) for n in range(args.job_docs))
        ]
        (data_dir / "job.jsonl").write_text("".join(json.dumps(r) + "\n" for r in job_rows))
        for mode in args.modes.split(","):
            print(f"{mode}: {args.clients} clients x {args.duration:g} s idle, then during a "
                  f"{len(job_rows)}-document index job ...", file=sys.stderr)  # fmt: skip
            rows += run_mode(args, data_dir, mode.strip(), queries)

    report = {
        **api_load.report_head(args),
        "torch_threads": args.torch_threads,
        "index": index,
        "job_docs": len(job_rows),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "nice": os.getpriority(os.PRIO_PROCESS, 0),
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        "results": rows,
    }  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"search_during_index-{Path(args.encoder).name}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")

    print(f"{'job thread':>10} {'phase':>9} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8} {'ok':>5} {'job docs/s':>10} {'job done':>9} load")  # fmt: skip
    for r in rows:
        job = r.get("job")
        rate = f"{job['rate_docs_per_s'] or 0:.1f}" if job else "-"
        done = f"{job['documents_done']}/{job['documents_total']}" if job else "-"
        print(
            f"{r['mode']:>10} {r['phase']:>9} {r['req_per_s']:>7.1f} {r['p50_ms']:>8.1f} "
            f"{r['p99_ms']:>8.1f} {r['max_ms']:>8.1f} {r['ok']:>5} {rate:>10} {done:>9} "
            f"{r['load_avg_1m'][0]:.1f}-{r['load_avg_1m'][1]:.1f}"
        )
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

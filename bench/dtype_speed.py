"""fp32 vs bf16 vs int8 on CPU: one Ember encoder loaded in each dtype, timed side by side.

    nice -n 10 .venv/bin/python bench/dtype_speed.py [--encoder smollm2] [--docs 64] [--rounds 2]
        [--threads 1] [--max-length 256] [--dtypes float32,bfloat16,bfloat16-autocast,int8]

Corpus: a fixed random sample (seed 0) of SciFact documents, ``title + " " + text``, truncated at
``--max-length`` tokens (default: the encoder's ``max_length``). Every encoder stays loaded;
every round encodes the whole sample with each dtype, the order rotating per round, and the
reported rate is the median over rounds (this machine is shared: read the ratios, not the
absolute numbers). Dtypes: ``float32``, ``bfloat16`` (bf16 weights: what ``auto`` picks on a
CPU with bf16 units), ``bfloat16-autocast`` (fp32 weights, ``torch.autocast`` bf16 matmuls,
for comparison only), ``int8`` (dynamic int8 Linear layers). Agreement: cosine between each
text's fp32 vector and its vector in the other dtype (min and mean), for the documents and for
as many SciFact queries (short, with the task instruction, as the API encodes them). Prints a
table and writes ``bench/out/dtype_speed.json``.

bf16 matmuls are fast only where the CPU has bf16 instructions (``avx512_bf16`` or AMX); the
flags found, torch's CPU capability and the load average are stored with the result.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])  # fmt: skip
    return [f for f in CPU_FLAGS if f in flags]


def sample_texts(data_dir: Path, n: int) -> tuple[list[str], list[str]]:
    """``n`` SciFact documents and ``n`` test queries, each a fixed random sample (seed 0)."""
    from indexer.evaluation import load_beir

    ds = load_beir(data_dir / "beir" / "scifact")
    texts = list(ds.doc_texts)
    random.Random(0).shuffle(texts)
    queries = [ds.queries[q] for q in ds.eval_query_ids]
    random.Random(0).shuffle(queries)
    return texts[:n], queries[:n]


def cosines(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min": round(float(cos.min()), 6), "mean": round(float(cos.mean()), 6)}


def main(argv: list[str] | None = None) -> int:
    import torch

    from encoders import Encoder
    from encoders.hardware import cpu_capability
    from encoders.registry import resolve_config
    from indexer.evaluation import default_data_dir, default_instruction

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--encoder", default="smollm2", help="preset or encoder folder")
    p.add_argument("--docs", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-length", type=int, default=None, help="document tokens kept")
    p.add_argument("--dtypes", default="float32,bfloat16,bfloat16-autocast,int8")
    p.add_argument("--data-dir", default=str(default_data_dir()))
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "dtype_speed.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    started = time.perf_counter()

    texts, queries = sample_texts(Path(args.data_dir), args.docs)
    base = resolve_config(args.encoder)
    if args.max_length:
        base = base.model_copy(update={"max_length": args.max_length})
    dtypes = args.dtypes.split(",")
    if dtypes[0] != "float32":
        raise SystemExit("--dtypes must start with float32 (the reference)")
    os.environ.pop("EMBER_DTYPE", None)  # each encoder gets the dtype it is asked for
    encoders = {
        d: Encoder.from_config(
            base.model_copy(update={"dtype": "float32" if d.endswith("-autocast") else d})
        )
        for d in dtypes
    }

    def compute(d: str) -> contextlib.AbstractContextManager[Any]:
        if d.endswith("-autocast"):
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    fp32 = encoders["float32"]
    instruction = default_instruction(fp32, "scifact")
    tokens = sum(len(t.ids) for t in fp32.tokenize(texts, None, fp32.config.max_length))
    for d, encoder in encoders.items():
        with compute(d):
            encoder.encode(texts[:2])  # warm-up (allocator, oneDNN kernels)

    seconds: dict[str, list[float]] = {d: [] for d in dtypes}
    vectors: dict[str, np.ndarray] = {}
    query_vectors: dict[str, np.ndarray] = {}
    for r in range(args.rounds):
        order = dtypes[r % len(dtypes) :] + dtypes[: r % len(dtypes)]
        for d in order:
            with compute(d):
                t0 = time.perf_counter()
                vectors[d] = np.asarray(encoders[d].encode(texts), dtype=np.float32)
                seconds[d].append(time.perf_counter() - t0)
                if r == 0:
                    query_vectors[d] = encoders[d].encode_queries(queries, instruction)
            print(f"round {r + 1} {d}: {seconds[d][-1]:.1f} s", file=sys.stderr, flush=True)

    rows: list[dict[str, Any]] = []
    ref = statistics.median(seconds["float32"])
    for d in dtypes:
        med = statistics.median(seconds[d])
        rows.append({
            "dtype": d,
            "runs_as": encoders[d].dtype + (" + autocast" if d.endswith("-autocast") else ""),
            "median_s": round(med, 2),
            "tokens_per_s": round(tokens / med, 1),
            "speedup_vs_fp32": round(ref / med, 2),
            "rounds_s": [round(s, 2) for s in seconds[d]],
            "cos_docs": cosines(vectors["float32"], vectors[d]),
            "cos_queries": cosines(query_vectors["float32"], query_vectors[d]),
        })  # fmt: skip
    result = {
        "encoder": args.encoder,
        "fingerprint": fp32.fingerprint,
        "docs": len(texts),
        "queries": len(queries),
        "tokens": tokens,
        "max_length": fp32.config.max_length,
        "threads": args.threads,
        "rounds": args.rounds,
        "cpu_flags": cpu_flags(),
        "cpu_capability": cpu_capability(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(time.perf_counter() - started, 1),
        "rows": rows,
        "updated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{args.encoder}: {len(texts)} SciFact docs, {tokens} tokens "
          f"(max {result['max_length']}), "
          f"{len(queries)} queries, {args.threads} thread(s), {result['cpu_capability']}, "
          f"flags {', '.join(result['cpu_flags']) or 'none found'}, load "
          f"{result['loadavg_before'][0]} -> {result['loadavg_after'][0]}")  # fmt: skip
    print("| dtype | runs as | median s | tokens/s | vs fp32 | rounds s | cos docs min / mean "
          "| cos queries min / mean |")  # fmt: skip
    print("|---|---|---:|---:|---:|---|---|---|")
    for row in rows:
        rounds = ", ".join(f"{s:.1f}" for s in row["rounds_s"])
        cd, cq = row["cos_docs"], row["cos_queries"]
        print(f"| {row['dtype']} | {row['runs_as']} | {row['median_s']:.1f} | "
              f"{row['tokens_per_s']:.0f} | {row['speedup_vs_fp32']:.2f}x | {rounds} | "
              f"{cd['min']:.5f} / {cd['mean']:.5f} | "
              f"{cq['min']:.5f} / {cq['mean']:.5f} |")  # fmt: skip
    print(f"wrote {out} ({result['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

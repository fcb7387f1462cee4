"""fp32 vs bf16 on CPU: the same Ember encoder loaded in both dtypes, timed side by side.

    nice .venv/bin/python bench/dtype_speed.py [--encoder smollm2-bi] [--docs 24] [--rounds 3]
                                                [--threads 1]

Corpus: a fixed random sample (seed 0) of SciFact documents, ``title + " " + text``, truncated at
the encoder's ``max_length``. Both models stay loaded; every round encodes the whole sample with
each dtype, the order alternating per round, and the reported rate is the median over rounds
(this machine is shared: read the ratio, not the absolute numbers). Agreement: cosine between
each document's fp32 and bf16 vectors (min and mean). Prints a table and writes
``bench/out/dtype_speed.json``.

bf16 matmuls are fast only where the CPU has bf16 instructions (``avx512_bf16`` or AMX); the
flags found are printed and stored with the result.
"""

from __future__ import annotations

import argparse
import json
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


def sample_docs(data_dir: Path, n: int) -> list[str]:
    from indexer.evaluation import load_beir

    ds = load_beir(data_dir / "beir" / "scifact")
    texts = list(ds.doc_texts)
    random.Random(0).shuffle(texts)
    return texts[:n]


def main(argv: list[str] | None = None) -> int:
    import torch

    from encoders import Encoder
    from encoders.registry import resolve_config
    from indexer.evaluation import default_data_dir

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--encoder", default="smollm2-bi", help="preset or encoder folder")
    p.add_argument("--docs", type=int, default=24)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", default=str(default_data_dir()))
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "dtype_speed.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    texts = sample_docs(Path(args.data_dir), args.docs)
    base = resolve_config(args.encoder)
    dtypes = ["float32", "bfloat16"]
    encoders = {d: Encoder.from_config(base.model_copy(update={"dtype": d})) for d in dtypes}
    fp32 = encoders["float32"]
    tokens = sum(len(t.ids) for t in fp32.tokenize(texts, None, fp32.config.max_length))
    for encoder in encoders.values():
        encoder.encode(texts[:2])  # warm-up (allocator, oneDNN kernels)

    seconds: dict[str, list[float]] = {d: [] for d in dtypes}
    vectors: dict[str, np.ndarray] = {}
    for r in range(args.rounds):
        for d in dtypes if r % 2 == 0 else dtypes[::-1]:
            t0 = time.perf_counter()
            vectors[d] = np.asarray(encoders[d].encode(texts), dtype=np.float32)
            seconds[d].append(time.perf_counter() - t0)
            print(f"round {r + 1} {d}: {seconds[d][-1]:.1f} s", file=sys.stderr, flush=True)

    a, b = vectors["float32"], vectors["bfloat16"]
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    rows: list[dict[str, Any]] = []
    for d in dtypes:
        med = statistics.median(seconds[d])
        rows.append({"dtype": d, "median_s": round(med, 2), "tokens_per_s": round(tokens / med, 1),
                     "rounds_s": [round(s, 2) for s in seconds[d]]})  # fmt: skip
    ratio = rows[0]["median_s"] / rows[1]["median_s"]
    result = {
        "encoder": args.encoder,
        "docs": len(texts),
        "tokens": tokens,
        "threads": args.threads,
        "rounds": args.rounds,
        "cpu_flags": cpu_flags(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "rows": rows,
        "bf16_speedup": round(ratio, 2),
        "cos_fp32_bf16": {"min": float(cos.min()), "mean": float(cos.mean())},
        "updated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{args.encoder}: {len(texts)} SciFact docs, {tokens} tokens, {args.threads} thread(s), "
          f"CPU flags {', '.join(result['cpu_flags']) or 'none found'}")  # fmt: skip
    print("| dtype | median s | tokens/s | rounds s |")
    print("|---|---:|---:|---|")
    for row in rows:
        rounds = ", ".join(f"{s:.1f}" for s in row["rounds_s"])
        print(f"| {row['dtype']} | {row['median_s']:.1f} | {row['tokens_per_s']:.0f} | {rounds} |")
    print(f"bf16 speed-up: {ratio:.2f}x; cos(fp32, bf16) min {cos.min():.5f}, "
          f"mean {cos.mean():.5f}; wrote {out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

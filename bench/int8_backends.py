"""int8 on the CPU, torch's dynamic quantisation vs ONNX Runtime's (issue 16 item 2: "pick by
measurement"), against fp32, on the same texts, through Ember's own loading path.

    .venv/bin/python bench/int8_backends.py [--preset smollm2-ember] [--docs 64] [--rounds 3]
                                            [--threads 2]

Contenders, each ``Encoder.from_config`` of one preset, in one process, interleaved (the order
rotates every round), median over rounds:

- ``torch fp32``: the preset in fp32 (Ember's sdpa attention);
- ``torch int8``: ``dtype="int8"``, ``int8_backend="torch"`` (``quantize_dynamic`` on the
  ``nn.Linear`` layers, per-channel int8 weights, ``down_proj`` kept fp32);
- ``ort int8``: ``dtype="int8"``, ``int8_backend="onnxruntime"`` (:mod:`encoders.onnx_int8`: the
  forward exported once into the model cache, per-channel 7-bit QInt8 MatMul weights, the
  activation x activation MatMuls and ``down_proj`` kept fp32, run by ONNX Runtime on Ember's
  batches and pooled by Ember). The export's own time is reported, not counted.

Each contender's vectors are compared with fp32's (cosine per text). Writes
``bench/out/int8_backends.json``. Corpus: a fixed random sample (seed 0) of SciFact documents,
``title + " " + text``, cut at the preset's max length.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from encode_throughput import write_result  # noqa: E402  (bench/ is not a package)

from encoders import Encoder, resolve_config  # noqa: E402
from encoders.hardware import cpu_capability  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "beir" / "scifact" / "corpus.jsonl"
OUT = ROOT / "bench" / "out"


def sample(n: int) -> list[str]:
    docs = [json.loads(line) for line in CORPUS.open(encoding="utf-8")]
    picks = np.random.default_rng(0).choice(len(docs), n, replace=False)
    return [f"{docs[i].get('title', '')} {docs[i]['text']}".strip() for i in picks]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="smollm2-ember", help="encoder preset or folder")
    parser.add_argument("--docs", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT / "int8_backends.json")
    args = parser.parse_args()
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("needs onnxruntime: pip install 'ember-search[onnx]'", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    texts = sample(args.docs)
    config = resolve_config(args.preset)
    fp32 = Encoder.from_config(config, dtype="float32")
    q8 = Encoder.from_config(config.model_copy(update={"int8_backend": "torch"}), dtype="int8")
    start = time.perf_counter()
    ort8 = Encoder.from_config(
        config.model_copy(update={"int8_backend": "onnxruntime"}), dtype="int8"
    )
    ort_load = time.perf_counter() - start  # the export, when the cache has none yet
    tokens = sum(len(i.ids) for i in fp32.tokenize(texts, None, config.max_length))
    runs = {
        "torch fp32": lambda: fp32.encode_documents(texts),
        "torch int8": lambda: q8.encode_documents(texts),
        "ort int8": lambda: ort8.encode_documents(texts),
    }
    names = list(runs)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    vectors: dict[str, np.ndarray] = {}
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            out = runs[name]()
            seconds[name].append(time.perf_counter() - start)
            vectors[name] = out / np.linalg.norm(out, axis=1, keepdims=True)
    base = float(np.median(seconds["torch fp32"]))
    rows = []
    print(f"{'contender':12s} {'tok/s':>8s} {'vs fp32':>8s} {'cos min':>8s} {'cos mean':>9s}")
    for name in names:
        median = float(np.median(seconds[name]))
        cos = (vectors[name] * vectors["torch fp32"]).sum(axis=1)
        row = {
            "contender": name, "seconds": seconds[name], "tokens_per_s": tokens / median,
            "vs_fp32": base / median, "cos_min": float(cos.min()), "cos_mean": float(cos.mean()),
        }  # fmt: skip
        rows.append(row)
        print(f"{name:12s} {row['tokens_per_s']:8.1f} {row['vs_fp32']:7.2f}x "
              f"{row['cos_min']:8.4f} {row['cos_mean']:9.4f}")  # fmt: skip
    result = {
        "command": " ".join(sys.argv), "preset": args.preset, "texts": len(texts),
        "tokens": tokens, "ort_load_s": ort_load,
        "threads": args.threads, "cpu": cpu_capability(),
        "load_average": {"start": load_start, "end": os.getloadavg()[0]},
        "onnxruntime": __import__("onnxruntime").__version__, "torch": torch.__version__,
        "rows": rows,
    }  # fmt: skip
    return write_result(args.out, result)


if __name__ == "__main__":
    raise SystemExit(main())

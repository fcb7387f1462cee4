"""int8 on the CPU, torch's dynamic quantisation vs ONNX Runtime's (issue 16 item 2: "pick by
measurement"), against fp32, on the same batches of SmolLM2.

    .venv/bin/pip install onnx onnxruntime onnxscript     # bench-only; wheels on this disk
    .venv/bin/python bench/int8_backends.py [--docs 64] [--rounds 3] [--threads 2]

The ``smollm2`` preset (causal attention, weighted-mean pooling) in fp32. Contenders, in one
process, interleaved (the order rotates every round), median over rounds:

- ``torch fp32``: ``Encoder.encode``;
- ``torch int8``: the same loaded with ``dtype="int8"`` (what Ember ships: ``quantize_dynamic`` on
  the ``nn.Linear`` layers, per-channel int8 weights, ``down_proj`` kept fp32);
- ``ort int8``: ``encoder.model`` exported once to ONNX (``torch.onnx.export``, opset 17, traced
  with eager attention, dynamic batch and length; the torch contenders keep Ember's sdpa),
  quantised with ``onnxruntime.quantization.quantize_dynamic`` (per-channel QInt8 MatMul
  weights, the ``down_proj`` MatMuls excluded, as in torch), run by ``InferenceSession`` (CPU
  provider, ``intra_op_num_threads`` = threads) on Ember's own batches (``Encoder.batches`` /
  ``collate``: the same ids, masks and position ids) and pooled by Ember's ``pool``.

Each contender's vectors are compared with fp32's (cosine per text). Writes
``bench/out/int8_backends.json``; the ONNX files go to ``bench/out/onnx/`` (not committed).
Corpus: a fixed random sample (seed 0) of SciFact documents, ``title + " " + text``, cut at 512
tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from encode_throughput import write_result  # noqa: E402  (bench/ is not a package)

from encoders import Encoder, resolve_config  # noqa: E402
from encoders.hardware import cpu_capability  # noqa: E402
from encoders.pooling import pool  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "beir" / "scifact" / "corpus.jsonl"
OUT = ROOT / "bench" / "out"


def sample(n: int) -> list[str]:
    docs = [json.loads(line) for line in CORPUS.open(encoding="utf-8")]
    picks = np.random.default_rng(0).choice(len(docs), n, replace=False)
    return [f"{docs[i].get('title', '')} {docs[i]['text']}".strip() for i in picks]


class _Hidden(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
    ) -> torch.Tensor:
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            use_cache=False,
        )  # fmt: skip
        return out.last_hidden_state


def ort_session(encoder: Encoder, folder: Path, threads: int) -> object:
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder.mkdir(parents=True, exist_ok=True)
    fp32, int8 = folder / "smollm2.onnx", folder / "smollm2-int8.onnx"
    if not int8.is_file():
        ids = torch.randint(10, 1000, (2, 16))
        mask, pos = torch.ones_like(ids), torch.arange(16)[None].repeat(2, 1)
        names = ("input_ids", "attention_mask", "position_ids", "hidden")
        dynamic = {n: {0: "b", 1: "t"} for n in names}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Hidden(encoder.model), (ids, mask, pos), str(fp32),
                input_names=["input_ids", "attention_mask", "position_ids"],
                output_names=["hidden"], dynamic_axes=dynamic, opset_version=17, dynamo=False,
            )  # fmt: skip
        graph = onnx.load(str(fp32), load_external_data=False).graph
        keep = [n.name for n in graph.node if n.op_type == "MatMul" and "down_proj" in n.name]
        quantize_dynamic(
            str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True,
            nodes_to_exclude=keep, op_types_to_quantize=["MatMul"],
        )  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(int8), options, providers=["CPUExecutionProvider"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT / "int8_backends.json")
    args = parser.parse_args()
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("needs onnx + onnxruntime: .venv/bin/pip install onnx onnxruntime onnxscript",
              file=sys.stderr)  # fmt: skip
        return 2
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    texts = sample(args.docs)
    config = resolve_config("smollm2").model_copy(update={"dtype": "float32"})
    fp32 = Encoder.from_config(config, dtype="float32")  # Ember's attention (sdpa), as shipped
    q8 = Encoder.from_config(config, dtype="int8")
    # the export traces eager attention (the same weights and function as sdpa)
    eager = Encoder.from_config(
        config.model_copy(update={"attn_implementation": "eager"}), dtype="float32"
    )
    session = ort_session(eager, OUT / "onnx", args.threads)
    del eager
    items = fp32.tokenize(texts, None, config.max_length)
    tokens = sum(len(i.ids) for i in items)
    hidden = fp32.dim

    def ort_encode() -> np.ndarray:
        out = np.zeros((len(items), hidden), dtype=np.float32)
        for order in fp32.batches(items):
            batch = fp32.collate([items[i] for i in order])
            feed = {k: batch[k].numpy() for k in ("input_ids", "attention_mask", "position_ids")}
            states = session.run(None, feed)[0]  # type: ignore[attr-defined]
            pooled = pool(torch.from_numpy(states), batch["attention_mask"], batch["pool_mask"],
                          config.pooling)  # fmt: skip
            out[order] = pooled.numpy()
        return out

    runs = {
        "torch fp32": lambda: fp32.encode(texts),
        "torch int8": lambda: q8.encode(texts),
        "ort int8": ort_encode,
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
        "command": " ".join(sys.argv), "texts": len(texts), "tokens": tokens,
        "threads": args.threads, "cpu": cpu_capability(),
        "load_average": {"start": load_start, "end": os.getloadavg()[0]},
        "onnxruntime": __import__("onnxruntime").__version__, "torch": torch.__version__,
        "rows": rows,
    }  # fmt: skip
    return write_result(args.out, result)


if __name__ == "__main__":
    raise SystemExit(main())

"""Encode throughput: Ember vs the reference library vs a naive per-batch loop, on CPU.

    nice .venv/bin/python bench/encode_throughput.py [--docs 160] [--llm-docs 40] [--rounds 3]
                                                     [--threads 2] [--ember-variants 4096:64,...]
                                                     [--ember-only] [--quick]
                                                     [--only smollm2|minilm]
                                                     [--dtypes bfloat16,int8]

Corpus: a fixed random sample (seed 0) of SciFact documents, ``title + " " + text``, mixed lengths,
truncated at 512 tokens by every contender. Models: SmolLM2-135M-Instruct (fp32, Ember preset
``smollm2``: causal attention, weighted-mean pooling; bidirectional mean costs the same) and
all-MiniLM-L6-v2 (mean pooling; max_length raised from the preset's 256 to 512 for all).

Contenders, all in one run, interleaved (the order rotates every round) and repeated; the
reported rate is the median over rounds:
- ``ember``: ``Encoder.encode`` (tokenise once, length-sorted token-budget batches);
- ``reference``: for SmolLM2 ``LLM2Vec.encode`` (llm2vec 0.2.3, transformers 4.44.2, in
  ``.venv-ref``, batch_size=32 = its default; it sorts by character length, pads left); for
  MiniLM ``SentenceTransformer.encode`` (sentence-transformers 3.0.1, batch_size=32 = its
  default), the reference implementation for that model. Both stay loaded in a worker process
  between rounds; the time is measured inside the worker around ``encode()``;
- ``naive``: plain transformers ``AutoModel`` in Ember's venv, documents in corpus order, fixed
  batches of 32 padded to the batch's longest, mean pooling;
- ``ember <dtype>`` (``--dtypes``): the same ``Encoder.encode`` loaded in another dtype
  (``bfloat16`` weights, ``int8`` dynamic quantisation of the Linear layers). Every other Ember
  contender is pinned to float32 (the ``smollm2`` preset's ``auto`` would pick bf16 on a CPU
  with bf16 units). Their % roofline is still against the **fp32** GEMM rate, so it can pass
  100 %: read it as "fraction of what fp32 matmuls could do".

Tokens = real (non-pad) tokens each contender feeds the model. Useful FLOPs per text of L tokens
= 2 * (weights of all Linear layers) * L + 4 * layers * attention width * L^2 (QK^T and AV, full
square); the roofline is the fp32 GEMM rate torch reaches here (2048^3 matmuls, same thread
count), measured every round. Writes ``bench/out/encode_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "bench"):  # run as a script: make `encoders` and `refenv` importable
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from refenv import REF_DIR, ensure_ref_env, ref_python, ref_view  # noqa: E402

from encoders.config import EncoderConfig  # noqa: E402
from encoders.encoder import Encoder  # noqa: E402
from encoders.loading import load_base_model, load_tokenizer, resolve_model_path  # noqa: E402
from encoders.registry import PRESETS  # noqa: E402

CORPUS = REPO.parent / "shared" / "data" / "beir" / "scifact" / "corpus.jsonl"
MAX_LENGTH = 512
BATCH = 32


# ---- corpus and cost model ---------------------------------------------------------------------
def sample_docs(n: int, seed: int = 0) -> list[str]:
    docs = []
    with CORPUS.open() as fh:
        for line in fh:
            d = json.loads(line)
            docs.append(f"{d.get('title', '')} {d.get('text', '')}".strip())
    return random.Random(seed).sample(docs, min(n, len(docs)))


@dataclass(frozen=True)
class CostModel:
    linear_params: int
    layers: int
    attn_width: int

    def flops(self, lengths: Sequence[int]) -> float:
        return float(
            sum(
                2 * self.linear_params * n + 4 * self.layers * self.attn_width * n * n
                for n in lengths
            )
        )


def cost_model(model: nn.Module) -> CostModel:
    linear = sum(
        int(m.weight.numel())
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and "pooler" not in name and "lm_head" not in name
    )
    cfg: Any = model.config
    heads = int(cfg.num_attention_heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    return CostModel(linear, int(cfg.num_hidden_layers), heads * head_dim)


def gemm_flops(threads: int, n: int = 2048, reps: int = 3) -> float:
    """Best fp32 matmul rate of ``reps`` n x n x n products (FLOP/s)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


# ---- contenders --------------------------------------------------------------------------------
@dataclass
class Contender:
    name: str
    batching: str
    run: Callable[[], float]  # one full pass; returns seconds
    lengths: list[int]
    padded_tokens: int
    close: Callable[[], None] = lambda: None
    seconds: list[float] = field(default_factory=list)


def ember_contender(
    name: str, cfg: EncoderConfig, texts: list[str], enc: Encoder | None = None
) -> tuple[Contender, Encoder]:
    enc = Encoder(cfg, enc.model, enc.tokenizer) if enc is not None else Encoder.from_config(cfg)
    items = enc.tokenize(texts, None, cfg.max_length)
    padded = sum(len(b) * max(len(items[i].ids) for i in b) for b in enc.batches(items))
    enc.encode(texts[:4])  # warm-up

    def run() -> float:
        t0 = time.perf_counter()
        enc.encode(texts)
        return time.perf_counter() - t0

    batching = f"sorted, budget {cfg.budget_for('cpu')} tok, max {cfg.max_batch_size}"
    return Contender(name, batching, run, [len(it.ids) for it in items], padded), enc


def naive_contender(folder: Path, texts: list[str]) -> Contender:
    model = load_base_model(folder)
    tok = load_tokenizer(folder)

    def encode(batch_texts: list[str]) -> list[torch.Tensor]:
        out = []
        with torch.inference_mode():
            for start in range(0, len(batch_texts), BATCH):
                batch = tok(
                    batch_texts[start : start + BATCH],
                    padding=True,
                    truncation=True,
                    max_length=MAX_LENGTH,
                    return_tensors="pt",
                )
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                out.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))
        return out

    lengths: list[int] = []
    padded = 0
    for start in range(0, len(texts), BATCH):
        mask = tok(
            texts[start : start + BATCH], padding=True, truncation=True, max_length=MAX_LENGTH
        )["attention_mask"]
        padded += len(mask) * len(mask[0])
        lengths += [sum(m) for m in mask]
    encode(texts[:4])  # warm-up

    def run() -> float:
        t0 = time.perf_counter()
        encode(texts)
        return time.perf_counter() - t0

    return Contender(
        "naive", f"corpus order, fixed {BATCH}, pad to batch max", run, lengths, padded
    )


def reference_contender(spec: dict[str, Any], label: str, workdir: Path) -> Contender:
    spec_file = workdir / f"worker-{label}.json"
    spec_file.write_text(json.dumps(spec))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": ""}
    env["OMP_NUM_THREADS"] = str(spec["threads"])
    proc = subprocess.Popen(
        [str(ref_python()), str(REF_DIR / "throughput_worker.py"), str(spec_file)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    def reply() -> dict[str, Any]:
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"reference worker ({label}) exited with {proc.wait()}")
        return dict(json.loads(line))

    ready = reply()

    def run() -> float:
        stdin.write("run\n")
        stdin.flush()
        return float(reply()["seconds"])

    def close() -> None:
        if proc.poll() is None:
            stdin.write("quit\n")
            stdin.flush()
            proc.wait(timeout=60)

    batching = f"sorted by chars, fixed {spec['batch_size']}"
    return Contender(
        label, batching, run, list(ready["lengths"]), int(ready["padded_tokens"]), close
    )


# ---- measurement -------------------------------------------------------------------------------
def measure(contenders: list[Contender], rounds: int, threads: int) -> list[float]:
    """Interleave: every round runs each contender once, the order rotating; GEMM each round."""
    gemm = []
    for r in range(rounds):
        gemm.append(gemm_flops(threads))
        k = r % len(contenders)
        for c in contenders[k:] + contenders[:k]:
            torch.set_num_threads(threads)
            c.seconds.append(c.run())
            rate = sum(c.lengths) / c.seconds[-1]
            load = os.getloadavg()[0]
            print(
                f"  round {r + 1}/{rounds} {c.name:<22} {rate:8.1f} tok/s (load {load:.1f})",
                flush=True,
            )
    return gemm


def summarise(
    model: str, contenders: list[Contender], cost: CostModel, gemm: list[float]
) -> list[dict[str, Any]]:
    roof = statistics.median(gemm)
    rows = []
    base = None
    for c in contenders:
        tokens = sum(c.lengths)
        med = statistics.median(c.seconds)
        rate = tokens / med
        if base is None:
            base = rate
        flops = cost.flops(c.lengths)
        rows.append(
            {
                "model": model,
                "contender": c.name,
                "batching": c.batching,
                "texts": len(c.lengths),
                "tokens": tokens,
                "padded_tokens": c.padded_tokens,
                "padding_overhead": c.padded_tokens / tokens - 1,
                "seconds": c.seconds,
                "median_seconds": med,
                "tokens_per_s": rate,
                "tokens_per_s_range": [tokens / max(c.seconds), tokens / min(c.seconds)],
                "vs_ember": rate / base,
                "useful_gflop_per_s": flops / med / 1e9,
                "roofline_fraction": flops / med / roof,
            }
        )
    return rows


def bench_model(
    which: str, texts: list[str], args: argparse.Namespace, workdir: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    preset = PRESETS[which]
    cfg = preset.model_copy(update={"max_length": MAX_LENGTH, "dtype": "float32"})
    folder = resolve_model_path(cfg.base_model)
    print(f"{which}: {len(texts)} docs, folder {folder}", flush=True)
    ember, enc = ember_contender("ember", cfg, texts)
    contenders = [ember]
    for variant in args.ember_variants:
        budget, max_batch = (int(x) for x in variant.split(":"))
        vcfg = cfg.model_copy(update={"token_budget": budget, "max_batch_size": max_batch})
        contenders.append(ember_contender(f"ember {budget}:{max_batch}", vcfg, texts, enc)[0])
    for dtype in args.dtypes:
        dcfg = cfg.model_copy(update={"dtype": dtype})
        contenders.append(ember_contender(f"ember {dtype}", dcfg, texts)[0])
    if args.ember_only:
        return _finish(which, contenders, cfg, enc, args)
    if which == "minilm":
        spec: dict[str, Any] = {"kind": "sentence-transformers", "folder": str(folder)}
        label = "sentence-transformers"
    else:
        spec = {
            "kind": "llm2vec",
            "folder": str(ref_view(folder, workdir / f"{which}-ref-view")),
            "bidirectional": cfg.attention == "bidirectional",
            "pooling": cfg.pooling,
        }
        label = "llm2vec"
    spec |= {"texts": texts, "batch_size": BATCH, "max_length": MAX_LENGTH}
    spec["threads"] = args.threads
    contenders.append(reference_contender(spec, label, workdir))
    contenders.append(naive_contender(folder, texts))
    return _finish(which, contenders, cfg, enc, args)


def _finish(
    which: str,
    contenders: list[Contender],
    cfg: EncoderConfig,
    enc: Encoder,
    args: argparse.Namespace,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    try:
        gemm = measure(contenders, args.rounds, args.threads)
    finally:
        for c in contenders:
            c.close()
    cost = cost_model(enc.model)
    meta = {
        "attention": cfg.attention,
        "pooling": cfg.pooling,
        "cost_model": cost.__dict__,
        "gemm_flops_per_round": gemm,
        "gemm_gflops_median": statistics.median(gemm) / 1e9,
    }
    return summarise(which, contenders, cost, gemm), meta


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        f"{'model':<8} {'contender':<22} {'tokens':>7} {'pad%':>5} {'tok/s':>8} "
        f"{'range':>15} {'vs ember':>8} {'GFLOP/s':>8} {'roofline':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lo, hi = r["tokens_per_s_range"]
        lines.append(
            f"{r['model']:<8} {r['contender']:<22} {r['tokens']:>7} "
            f"{100 * r['padding_overhead']:>4.0f}% {r['tokens_per_s']:>8.1f} "
            f"{f'{lo:.0f}-{hi:.0f}':>15} {r['vs_ember']:>7.2f}x {r['useful_gflop_per_s']:>8.2f} "
            f"{100 * r['roofline_fraction']:>7.1f}%"
        )
    return "\n".join(lines)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| model | contender | batching | real tokens | pad | tokens/s (median) | range "
        "| vs ember | useful GFLOP/s | % roofline |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lo, hi = r["tokens_per_s_range"]
        lines.append(
            f"| {r['model']} | {r['contender']} | {r['batching']} | {r['tokens']:,} "
            f"| {100 * r['padding_overhead']:.0f} % | {r['tokens_per_s']:.1f} | {lo:.0f}–{hi:.0f} "
            f"| {r['vs_ember']:.2f}× | {r['useful_gflop_per_s']:.1f} "
            f"| {100 * r['roofline_fraction']:.0f} % |"
        )
    return "\n".join(lines)


def write_result(out: Path, result: dict[str, Any]) -> int:
    """Write ``result`` to ``out`` as JSON (its folder made) and say where: a script's last step
    (``int8_backends.py`` ends the same way); returns 0, the exit status."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--docs", type=int, default=160, help="MiniLM sample size")
    ap.add_argument("--llm-docs", type=int, default=40, help="SmolLM2 sample size")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument(
        "--ember-variants",
        type=lambda s: [v for v in s.split(",") if v],
        default=[],
        help="extra Ember settings TOKEN_BUDGET:MAX_BATCH, comma-separated",
    )
    ap.add_argument(
        "--dtypes",
        type=lambda s: [v for v in s.split(",") if v],
        default=[],
        help="extra Ember contenders in these dtypes (bfloat16, int8), comma-separated",
    )
    ap.add_argument("--only", choices=["smollm2", "minilm"], default=None)
    ap.add_argument(
        "--ember-only", action="store_true", help="only Ember and its --ember-variants (a sweep)"
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: 16/8 docs, 1 round")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "encode_throughput.json")
    ap.add_argument(
        "--markdown", type=Path, default=None, help="print a saved JSON result as markdown, exit"
    )
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown_table(json.loads(args.markdown.read_text())["rows"]))
        return 0
    if args.quick:
        args.docs, args.llm_docs, args.rounds = 16, 8, 1
    ensure_ref_env()
    load_at_start = os.getloadavg()
    torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    models = [args.only] if args.only else ["smollm2", "minilm"]
    with tempfile.TemporaryDirectory(prefix="ember-throughput-") as tmp:
        for which in models:
            texts = sample_docs(args.llm_docs if which == "smollm2" else args.docs)
            model_rows, meta[which] = bench_model(which, texts, args, Path(tmp))
            rows += model_rows
    table = format_table(rows)
    print(table)
    for which, m in meta.items():
        print(
            f"{which}: fp32 GEMM roofline (median of rounds) {m['gemm_gflops_median']:.1f} GFLOP/s"
        )
    result = {
        "command": " ".join(["bench/encode_throughput.py", *(argv or sys.argv[1:])]),
        "threads": args.threads,
        "rounds": args.rounds,
        "max_length": MAX_LENGTH,
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "rows": rows,
        "models": meta,
    }
    return write_result(args.out, result)


if __name__ == "__main__":
    raise SystemExit(main())

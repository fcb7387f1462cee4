"""MoEE ablation without extra model passes: hs only, rw only and cos hs + w * cos rw for several
w, on scifact-mini and STS-B.

The combined vectors ``bench/quality.py`` cached for a MoEE encoder row (``.ember/eval-cache``)
hold the unit standardised ``hs`` and ``rw`` parts (``MoeeEncoder.split_combined`` recovers them
exactly), so every weighting is scored from one encoding pass. Run the quality row first:

    python bench/quality.py --mini --row "MoEE ...=.ember/encoders/moee-smollm2-UNTRAINED"
    python bench/moee_sweep.py .ember/encoders/moee-smollm2-UNTRAINED

Writes ``bench/out/moee_sweep.json`` and prints a markdown table (x100).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0)


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from encoders import Encoder
    from encoders.moee import MoeeEncoder, combine
    from encoders.registry import resolve_config
    from indexer.evaluation import default_instruction, load_beir, load_sts
    from indexer.evaluation.beir import score_dense
    from indexer.evaluation.cache import VectorCache, default_cache_dir, encode_cached
    from indexer.evaluation.data import default_data_dir
    from indexer.evaluation.sts import score_sts, unique_sentences

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("encoder", help="MoEE encoder folder (kind 'moee')")
    p.add_argument("--data-dir", default=str(default_data_dir()))
    p.add_argument("--cache-dir", default=str(default_cache_dir()))
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "moee_sweep.json"))
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default=None,
        help="the dtype the quality row was encoded with (bench/quality.py --dtype)",
    )
    args = p.parse_args(argv)

    config = resolve_config(args.encoder)
    if args.dtype:
        config = config.model_copy(update={"dtype": args.dtype})
    encoder = Encoder.from_config(config)  # loaded once, in the dtype the row was encoded in
    if not isinstance(encoder, MoeeEncoder):
        raise SystemExit(f"{args.encoder} is not a MoEE encoder")
    cache = VectorCache(args.cache_dir)
    data = Path(args.data_dir)
    ds = load_beir(data / "beir" / "scifact-mini")
    qids = ds.eval_query_ids
    docs = encoder.split_combined(encode_cached(encoder, ds.doc_texts, cache=cache))
    queries = encoder.split_combined(
        encode_cached(
            encoder,
            [ds.queries[q] for q in qids],
            instruction=default_instruction(encoder, "scifact"),
            max_length=encoder.config.query_max_length,
            cache=cache,
        )
    )
    sts = load_sts(data / "sts" / "STSBenchmark" / "stsbenchmark")
    sentences, a, b = unique_sentences(sts)
    sts_parts = encoder.split_combined(
        encode_cached(
            encoder, sentences, instruction=default_instruction(encoder, "sts"), cache=cache
        )
    )

    def variant(w: float | None, part: str | None = None) -> dict[str, Any]:
        def pick(parts: dict[str, np.ndarray]) -> np.ndarray:
            if part is not None:
                return parts[part]
            assert w is not None
            return combine(parts["hs"], parts["rw"], w)

        scores = score_dense(ds, pick(queries), pick(docs)).as_dict()
        s = pick(sts_parts)
        rho, _ = score_sts(sts.scores, s[a], s[b])
        return {**scores, "sts_spearman": rho}

    rows: dict[str, dict[str, Any]] = {
        "hs only (standardised)": variant(None, "hs"),
        "rw only (standardised)": variant(None, "rw"),
    }
    for w in WEIGHTS:
        rows[f"sum: cos hs + {w:g} * cos rw"] = variant(w)
    out = {
        "encoder": args.encoder,
        "fingerprint": encoder.fingerprint,
        "dtype": encoder.config.dtype,
        "dataset": "scifact-mini",
        "sts": "STS-B test",
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    keys = [k for k in next(iter(rows.values())) if "ndcg" in k.lower() or "recall" in k.lower()]
    print("| variant | " + " | ".join(keys) + " | STS-B ρ |")
    print("|---|" + "---:|" * (len(keys) + 1))
    for name, r in rows.items():
        cells = " | ".join(f"{100 * r[k]:.1f}" for k in keys)
        print(f"| {name} | {cells} | {100 * r['sts_spearman']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

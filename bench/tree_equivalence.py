"""Do two source trees make the same vectors? Encode fixed tiny random models with the tree on
``PYTHONPATH`` and save every vector; then compare two such files, case by case.

    # in each tree (e.g. two git worktrees), the same --models folder (built once, by the first):
    EMBER_DTYPE=float32 PYTHONPATH=<tree> python bench/tree_equivalence.py encode OUT.npz
    python bench/tree_equivalence.py compare BEFORE.npz AFTER.npz

Cases: a tiny Llama bidirectional mean, causal weighted mean and last token, Echo, and a tiny
OLMoE as MoEE concat and sum (its named ``hs`` / ``rw`` vectors too); documents, instructed
queries, ``encode_named`` and the fingerprint. One torch thread. Used for the issue-14
before/after (bench/RESULTS.md, "Before/after issue 14, end to end"). Written against the
public API both trees share (``Encoder.from_config(config)``, the dtype from ``EMBER_DTYPE``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

DOCS = [
    "Vitamin D deficiency is associated with an increased risk of infection in adults.",
    "a",
    "The quick brown fox jumps over the lazy dog and keeps running through the field all day.",
    "Large language models turn text into vectors when attention is bidirectional. " * 3,
    "0 1 2 3 4 5 6 7 8 9",
    "cells divide quickly",
]
QUERIES = ["vitamin D and infection", "fox"]
INSTRUCTION = "Given a scientific claim, retrieve documents that support or refute the claim"


def encode(out: Path, models: Path) -> int:
    import torch

    from encoders import Encoder, EncoderConfig
    from encoders.config import MoeeConfig
    from encoders.testing import tiny_model_folder

    torch.set_num_threads(1)

    def folder(family: str) -> str:
        path = models / family
        if not (path / "config.json").exists():
            tiny_model_folder(path, family)
        return str(path)

    llama = folder("llama")
    cases = {
        "llama-bi-mean": dict(base_model=llama, attention="bidirectional", pooling="mean"),
        "llama-causal-wmean": dict(base_model=llama, attention="causal", pooling="weighted_mean"),
        "llama-causal-last": dict(base_model=llama, attention="causal", pooling="last_token"),
        "llama-echo": dict(base_model=llama, attention="causal", pooling="mean", echo=True),
        "olmoe-moee-concat": dict(
            base_model=folder("olmoe"), kind="moee",
            moee=MoeeConfig(similarity="concat", standardize=False),
        ),
        "olmoe-moee-sum": dict(
            base_model=folder("olmoe"), kind="moee",
            moee=MoeeConfig(similarity="sum", standardize=False),
        ),
    }  # fmt: skip
    arrays: dict[str, np.ndarray] = {}
    for name, fields in cases.items():
        encoder = Encoder.from_config(EncoderConfig(**fields))  # type: ignore[arg-type]
        arrays[f"{name}/docs"] = encoder.encode_documents(DOCS)
        arrays[f"{name}/queries"] = encoder.encode_queries(QUERIES, INSTRUCTION)
        for key, value in dict(encoder.encode_named(DOCS)).items():
            arrays[f"{name}/named/{key}"] = np.asarray(value)
        arrays[f"{name}/fingerprint"] = np.array([encoder.fingerprint])
    np.savez(out, **arrays)  # type: ignore[arg-type]
    print(f"{len(arrays)} arrays -> {out}")
    return 0


def compare(before: Path, after: Path) -> int:
    a, b = np.load(before), np.load(after)
    differ = 0
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            print(f"{key}: only in {'before' if key in a else 'after'}")
            differ += 1
            continue
        x, y = a[key], b[key]
        if x.dtype.kind in "US":
            same = bool((x == y).all())
            print(f"{key}: {'same' if same else f'{x[0]} -> {y[0]}'}")
        else:
            same = np.array_equal(x, y)
            print(
                f"{key} {x.shape}: "
                + ("identical" if same else f"max |d| {np.abs(x - y).max():.2e}")
            )
        differ += 0 if same or key.endswith("/fingerprint") else 1
    print("vectors identical" if not differ else f"{differ} arrays differ")
    return 1 if differ else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    enc = sub.add_parser("encode", help="encode the cases with the tree on PYTHONPATH")
    enc.add_argument("out", type=Path)
    enc.add_argument("--models", type=Path, default=Path("/tmp/ember-tree-equivalence/models"))
    cmp = sub.add_parser("compare", help="compare two encode outputs")
    cmp.add_argument("before", type=Path)
    cmp.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "encode":
        return encode(args.out, args.models)
    return compare(args.before, args.after)


if __name__ == "__main__":
    sys.exit(main())

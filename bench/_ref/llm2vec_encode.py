"""Encode sentences with the reference llm2vec 0.2.3 (runs inside ``.venv-ref``).

    python llm2vec_encode.py SPEC.json

SPEC: {"folder": str, "sentences": [str], "instruction": str, "out": dir,
       "runs": [{"name": str, "bidirectional": bool, "pooling": str, "with_instruction": bool}],
       "count_sentences": [str] (optional: tokenised with the instruction, not encoded)}

Each run loads ``LLM2Vec.from_pretrained(folder, enable_bidirectional=..., pooling_mode=...,
skip_instruction=True)`` and encodes at batch_size=1 (llm2vec pads on the left and does not
correct position ids, so only batch size 1 is free of padding effects). Writes ``<out>/<name>.npy``
(raw, unnormalised vectors) and ``<out>/meta.json`` with, per run and sentence, the input ids and
the number of tokens llm2vec pools over (its ``embed_mask``); the same for ``count_sentences``
under ``"counts"``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from llm2vec import LLM2Vec


def tokens_and_pooled(l2v: Any, pairs: list[list[str]]) -> tuple[list[list[int]], list[int]]:
    """What llm2vec feeds the model and pools over, from its own tokenisation path."""
    ids: list[list[int]] = []
    pooled: list[int] = []
    for instr, text in pairs:
        features = l2v.tokenize([l2v.prepare_for_tokenization(l2v._convert_to_str(instr, text))])
        ids.append(features["input_ids"][0].tolist())
        pooled.append(int(features["embed_mask"][0].sum()))
    return ids, pooled


def load(spec: dict[str, Any], run: dict[str, Any]) -> Any:
    return LLM2Vec.from_pretrained(
        spec["folder"],
        enable_bidirectional=bool(run["bidirectional"]),
        pooling_mode=run["pooling"],
        skip_instruction=True,
        max_length=512,
        torch_dtype=torch.float32,
    )


def encode_run(spec: dict[str, Any], run: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    l2v = load(spec, run)
    sentences: list[str] = list(spec["sentences"])
    instruction = spec["instruction"] if run["with_instruction"] else ""
    pairs = [[instruction, s] for s in sentences]
    with torch.inference_mode():
        vecs = l2v.encode(pairs, batch_size=1, show_progress_bar=False, convert_to_numpy=True)
    ids, pooled = tokens_and_pooled(l2v, pairs)
    meta = {
        "ids": ids,
        "pooled_tokens": pooled,
        "model_class": type(l2v.model).__name__,
        "attn_implementation": getattr(l2v.model.config, "_attn_implementation", None),
    }
    return np.asarray(vecs, dtype=np.float32), meta


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    torch.manual_seed(0)
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"transformers": transformers.__version__, "runs": {}}
    for run in spec["runs"]:
        vecs, run_meta = encode_run(spec, run)
        np.save(out / f"{run['name']}.npy", vecs)
        meta["runs"][run["name"]] = run_meta
    if spec.get("count_sentences"):
        l2v = load(spec, spec["runs"][0])
        pairs = [[spec["instruction"], s] for s in spec["count_sentences"]]
        ids, pooled = tokens_and_pooled(l2v, pairs)
        meta["counts"] = {"ids": ids, "pooled_tokens": pooled}
    (out / "meta.json").write_text(json.dumps(meta))


if __name__ == "__main__":
    main()

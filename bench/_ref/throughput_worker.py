"""Reference encoder kept warm for ``bench/encode_throughput.py`` (runs inside ``.venv-ref``).

    python throughput_worker.py SPEC.json      then, on stdin, one command per line:
        run   -> encode all texts once, answer {"seconds": t}
        quit  -> exit

SPEC: {"kind": "llm2vec" | "sentence-transformers", "folder": str, "texts": [str],
       "batch_size": int, "max_length": int, "threads": int,
       "bidirectional": bool, "pooling": str}   (the last two for llm2vec)

On start it loads the model, does one warm-up batch, and answers one line
{"ready": true, "lengths": [real tokens per text], "padded_tokens": int, ...}: the tokens the
library's own encode() path feeds the model (it sorts by character length and cuts fixed-size
batches; llm2vec pads on the left, sentence-transformers on the right).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch


class _Runner:
    """What both runners share: the texts, the batch size, the library's own encode() and the
    token count over its batches."""

    model: Any

    def __init__(self, spec: dict[str, Any]) -> None:
        self.texts: list[str] = list(spec["texts"])
        self.batch_size = int(spec["batch_size"])

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(
            self.model.encode(
                texts, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True
            )
        )

    def _counts(self, order: Any, mask_of: Callable[[Any], Any]) -> tuple[list[int], int]:
        """Real tokens per text and padded tokens, the texts taken in the library's ``order``
        and cut into its fixed-size batches; ``mask_of`` is a batch's attention mask."""
        lengths = [0] * len(self.texts)
        padded = 0
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            mask = mask_of(idx)
            padded += int(mask.numel())
            for row, i in enumerate(idx):
                lengths[int(i)] = int(mask[row].sum())
        return lengths, padded


class Llm2VecRunner(_Runner):
    def __init__(self, spec: dict[str, Any]) -> None:
        from llm2vec import LLM2Vec

        self.model = LLM2Vec.from_pretrained(
            spec["folder"],
            enable_bidirectional=bool(spec["bidirectional"]),
            pooling_mode=spec["pooling"],
            max_length=int(spec["max_length"]),
            # llm2vec cuts documents longer than doc_max_length (default 400) by words first;
            # set to max_length so both sides see the same max_length-token truncation.
            doc_max_length=int(spec["max_length"]),
            skip_instruction=True,
            torch_dtype=torch.float32,
        )
        super().__init__(spec)

    def token_counts(self) -> tuple[list[int], int]:
        """Real tokens per text and padded tokens, following LLM2Vec.encode's own path."""
        m = self.model
        strings = [m._convert_to_str("", t) for t in self.texts]
        order = np.argsort([-m._text_length(s) for s in strings])
        return self._counts(
            order,
            lambda idx: m.tokenize([m.prepare_for_tokenization(strings[i]) for i in idx])[
                "attention_mask"
            ],
        )


class SentenceTransformersRunner(_Runner):
    def __init__(self, spec: dict[str, Any]) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(spec["folder"], device="cpu")
        self.model.max_seq_length = int(spec["max_length"])
        super().__init__(spec)

    def token_counts(self) -> tuple[list[int], int]:
        m = self.model
        order = np.argsort([-m._text_length(t) for t in self.texts])
        return self._counts(
            order, lambda idx: m.tokenize([self.texts[i] for i in idx])["attention_mask"]
        )


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    torch.set_num_threads(int(spec["threads"]))
    runner: Llm2VecRunner | SentenceTransformersRunner
    if spec["kind"] == "llm2vec":
        runner = Llm2VecRunner(spec)
    elif spec["kind"] == "sentence-transformers":
        runner = SentenceTransformersRunner(spec)
    else:
        raise SystemExit(f"unknown kind {spec['kind']!r}")
    with torch.inference_mode():
        runner.encode(runner.texts[: min(4, len(runner.texts))])  # warm-up
    lengths, padded = runner.token_counts()
    ready = {
        "ready": True,
        "lengths": lengths,
        "padded_tokens": padded,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        if cmd == "run":
            t0 = time.perf_counter()
            with torch.inference_mode():
                vecs = runner.encode(runner.texts)
            seconds = time.perf_counter() - t0
            print(json.dumps({"seconds": seconds, "shape": list(vecs.shape)}), flush=True)


if __name__ == "__main__":
    main()

"""Encode sentences with sentence-transformers 3.0.1 (runs inside ``.venv-ref``).

    python st_encode.py SPEC.json

SPEC: {"folder": str, "sentences": [str], "prompt": str, "out": dir}. Writes ``plain.npy``
(no prompt) and ``prompt.npy`` (``prompt`` prepended, ``include_prompt=False`` so the prompt
tokens are left out of mean pooling), both as the model's own pipeline outputs them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from sentence_transformers import SentenceTransformer


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    model = SentenceTransformer(spec["folder"], device="cpu")
    sentences = list(spec["sentences"])
    plain = model.encode(sentences, batch_size=1, convert_to_numpy=True)
    model.set_pooling_include_prompt(False)
    prompted = model.encode(sentences, prompt=spec["prompt"], batch_size=1, convert_to_numpy=True)
    np.save(out / "plain.npy", np.asarray(plain, dtype=np.float32))
    np.save(out / "prompt.npy", np.asarray(prompted, dtype=np.float32))


if __name__ == "__main__":
    main()

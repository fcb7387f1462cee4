"""What attention llm2vec 0.2.3's ``Qwen2BiModel`` really runs (inside ``.venv-ref``).

    .venv/bin/python -c "from encoders.testing import tiny_model_folder as t; t('/tmp/q2', 'qwen2')"
    .venv-ref/bin/python bench/_ref/qwen2_attention.py /tmp/q2

Encodes 24 random token ids with llm2vec's ``Qwen2BiModel`` and with transformers' plain
``Qwen2Model``, causal (its default mask) and truly bidirectional (a zero 4D mask, which
transformers 4.44 uses as given), under sdpa and eager attention, and prints the per-token
cosine of llm2vec's states to each. llm2vec sets ``is_causal = False`` on the attention modules
but does not override ``Qwen2Model._update_causal_mask`` (its Llama / Mistral / Gemma models
do), so the causal mask is still built: its states equal the causal ones.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from llm2vec.models.bidirectional_qwen2 import Qwen2BiModel
from transformers import Qwen2Model


def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.asarray((a * b).sum(-1))


def main() -> None:
    folder = sys.argv[1]
    # fixed random ids: the attention pattern does not depend on the text (and the tokenizer
    # files transformers 5 writes are newer than this stack reads)
    vocab = Qwen2Model.config_class.from_pretrained(folder).vocab_size
    ids = torch.randint(4, vocab, (1, 24), generator=torch.Generator().manual_seed(0))
    n = ids.shape[1]
    for impl in ("sdpa", "eager"):
        bi = Qwen2BiModel.from_pretrained(folder, attn_implementation=impl).eval()
        plain = Qwen2Model.from_pretrained(folder, attn_implementation=impl).eval()
        with torch.no_grad():
            ones = torch.ones_like(ids)
            h_bi = bi(input_ids=ids, attention_mask=ones).last_hidden_state[0].numpy()
            h_causal = plain(input_ids=ids, attention_mask=ones).last_hidden_state[0].numpy()
            zero = torch.zeros(1, 1, n, n)
            h_full = plain(input_ids=ids, attention_mask=zero).last_hidden_state[0].numpy()
        for name, other in (("causal", h_causal), ("bidirectional", h_full)):
            c = cos(h_bi, other)
            print(f"{impl}: llm2vec Qwen2BiModel vs {name} Qwen2Model: "
                  f"cos min {c.min():.4f} max {c.max():.4f} over {n} tokens")  # fmt: skip


if __name__ == "__main__":
    main()

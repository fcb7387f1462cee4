"""Train a tiny BPE tokenizer and save it as HF tokenizer files (runs inside ``.venv-ref``).

The files are written by the reference environment's own ``tokenizers``/``transformers`` (0.19 /
4.44), so the old stack can read them; the newer stack in Ember's venv reads the old format too.
``bench/parity_llm2vec.py`` then checks that both sides produce identical ids.

    python make_tokenizer.py SPEC.json

SPEC: {"folder": str, "style": "bytelevel" | "qwen2" | "metaspace", "bos": bool, "vocab_size": int,
       "corpus": [str, ...]}. Prints {"vocab_size": <len(tokenizer)>} as JSON.

- ``bytelevel``: GPT-2 / SmolLM2 / Llama-3 style (byte-level pre-tokenizer, no prefix space);
- ``qwen2``: Qwen2 style (its split regex, digits one by one, then byte-level), as in Qwen2's
  published tokenizer.json, which transformers 5 rebuilds for the Qwen2 model type;
- ``metaspace``: Llama-2 / Mistral (SentencePiece) style, ``▁`` prepended to the first word;
- ``bos``: a post-processor adds ``<s>`` in front of every sequence, as Llama / Mistral do.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

# The BPE helpers shared with Ember's tiny test models: encoders.bpe imports only tokenizers and
# transformers, so this venv reads it from the repository (last on the path: PYTHONPATH is empty).
sys.path.append(str(Path(__file__).resolve().parents[2]))
from encoders.bpe import fast_tokenizer, train_bpe

# the pre-tokenizer pattern of Qwen2's published tokenizer.json
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)


def build(spec: dict[str, Any]) -> PreTrainedTokenizerFast:
    style = spec["style"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    alphabet: list[str] = []
    if style == "bytelevel":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    elif (
        style == "qwen2"
    ):  # Qwen2's tokenizer.json: its split regex (digits one by one), then bytes
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    elif style == "metaspace":
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    else:
        raise SystemExit(f"unknown tokenizer style {style!r}")
    train_bpe(tok, list(spec["corpus"]), int(spec["vocab_size"]), alphabet)
    if spec["bos"]:
        bos_id = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
        )
    # As Llama / Mistral tokenizers: no token_type_ids (their models take none).
    return fast_tokenizer(tok, model_input_names=["input_ids", "attention_mask"])


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    tokenizer = build(spec)
    folder = Path(spec["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    print(json.dumps({"vocab_size": len(tokenizer)}))


if __name__ == "__main__":
    main()

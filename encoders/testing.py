"""Tiny random models built from configs in-process, for tests and benchmarks (no downloads).

``tiny_model_folder(path, family)`` writes an HF folder with random weights and a small byte-level
BPE tokenizer trained on a fixed text, for any family in :data:`FAMILIES`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from encoders.bpe import fast_tokenizer, train_bpe
from encoders.config import EncoderConfig

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Given a scientific claim, retrieve documents that support or refute the claim.",
    "Retrieve relevant passages that answer the query about proteins, cells and genes.",
    "Vitamin D deficiency is associated with an increased risk of infection in adults.",
    "Search engines rank documents by the cosine similarity of their embeddings.",
    "Large language models turn text into vectors when their attention is bidirectional.",
    "0 1 2 3 4 5 6 7 8 9 a b c d e f g h i j k l m n o p q r s t u v w x y z",
]

_COMMON: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
}

_MOE: dict[str, Any] = {"num_experts_per_tok": 2, "output_router_logits": False}

FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {},
    "mistral": {"sliding_window": None},
    "qwen2": {},
    "qwen3": {"head_dim": 8},
    "gemma2": {"head_dim": 8, "sliding_window": 64},
    "gemma3_text": {"head_dim": 8, "sliding_window": 64},
    "qwen2_moe": {
        **_MOE,
        "num_experts": 4,
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 32,
    },
    "olmoe": {**_MOE, "num_experts": 4},
    "mixtral": {**_MOE, "num_local_experts": 4},
    "gpt2": {},
}


def tiny_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    train_bpe(tok, _CORPUS, vocab_size, pre_tokenizers.ByteLevel.alphabet())
    return fast_tokenizer(tok)


def tiny_config(family: str, vocab_size: int, **overrides: Any) -> Any:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {sorted(FAMILIES)}")
    if family == "gpt2":
        kwargs: dict[str, Any] = {
            "n_embd": 32,
            "n_layer": 2,
            "n_head": 4,
            "n_positions": 256,
            "n_inner": 64,
        }
    else:
        kwargs = {**_COMMON, **FAMILIES[family]}
    kwargs.update(vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    kwargs.update(overrides)
    return AutoConfig.for_model(family, **kwargs)


def tiny_model_folder(
    path: str | Path, family: str = "llama", seed: int = 0, **overrides: Any
) -> Path:
    """Write a random-weight causal LM of ``family`` plus tokenizer to ``path``."""
    path = Path(path)
    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, len(tok), **overrides))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def tiny_encoder(path: str | Path, family: str = "llama", **config: Any) -> Any:
    """Build a tiny model folder at ``path`` and an Encoder on it (fp32, CPU)."""
    from encoders.encoder import Encoder

    folder = tiny_model_folder(path, family)
    return Encoder.from_config(EncoderConfig(base_model=str(folder), **config))

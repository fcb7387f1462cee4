"""Tiny BPE tokenizers trained in-process and wrapped as HF fast tokenizers: the tokenizer of the
tiny test models (:mod:`encoders.testing`) and of the parity models' reference side
(``bench/_ref/make_tokenizer.py``, which runs in the reference venv: so this module imports
``tokenizers`` and ``transformers`` only, and keeps to what their 0.19 / 4.44 releases have).
"""

from __future__ import annotations

from typing import Any

from tokenizers import Tokenizer, trainers
from transformers import PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def train_bpe(tok: Tokenizer, corpus: list[str], vocab_size: int, alphabet: list[str]) -> None:
    """Train ``tok`` (a BPE model with its pre-tokenizer) on four passes over ``corpus``."""
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(corpus * 4, trainer=trainer)


def fast_tokenizer(tok: Tokenizer, **options: Any) -> PreTrainedTokenizerFast:
    """``tok`` as an HF tokenizer with the :data:`SPECIALS` in their roles."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        **options,
    )

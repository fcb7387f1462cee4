"""Small shared types of the encoder package: a tokenised input, what a trainable pooler looks
like to the :class:`encoders.encoder.Encoder` that runs it, and the Encoder class of each kind."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

import torch

if TYPE_CHECKING:
    from encoders.encoder import Encoder


@dataclass(frozen=True)
class Tokenized:
    """One tokenised input: ``ids`` and the index of the first text (non-instruction) token."""

    ids: list[int]
    text_start: int


class EncodeOptions(TypedDict, total=False):
    """How texts are encoded, as keyword arguments of every encode method (one list for all):
    ``max_length`` (default: the config's), ``show_progress`` (a progress bar) and ``query``
    (the texts are queries: the query prompt rule of :meth:`EncoderConfig.prefix`). Read in one
    place, :meth:`encoders.encoder.Encoder.run_batches`; the defaults are its defaults."""

    max_length: int | None
    show_progress: bool
    query: bool


class TrainablePooler(Protocol):
    """A small trainable module that pools the model output (see ``encoders.poolers``).

    Called with the HF model output (``hidden_states`` filled when ``needs_all_layers``) and the
    collated batch (``attention_mask``, ``pool_mask``); returns [B, D].
    """

    needs_all_layers: bool

    def __call__(self, output: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def to(self, device: torch.device) -> TrainablePooler: ...


# Encoder subclasses by ``EncoderConfig.kind``, imported lazily (module:Class).
ENCODER_KINDS = {
    "llm2vec": "encoders.encoder:Encoder",
    "llara": "encoders.llara:LlaraEncoder",
    "moee": "encoders.moee:MoeeEncoder",
}


def encoder_class(kind: str) -> type[Encoder]:
    module_name, _, attr = ENCODER_KINDS[kind].partition(":")
    klass: type[Encoder] = getattr(importlib.import_module(module_name), attr)
    return klass

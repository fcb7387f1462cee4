"""Text -> vectors with decoder LLMs (LLM2Vec-style attention switch, pooling, adapters).

The names below load on first use (PEP 562), so light modules such as :mod:`encoders.errors`
can be imported without torch and transformers (the API's job routes and the worker client
import them)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from encoders.config import AdapterSpec, EncoderConfig
    from encoders.encoder import Encoder
    from encoders.registry import DEFAULT_ENCODER, PRESETS, load_encoder, resolve_config

_WHERE = {
    "AdapterSpec": "encoders.config",
    "EncoderConfig": "encoders.config",
    "Encoder": "encoders.encoder",
    "DEFAULT_ENCODER": "encoders.registry",
    "PRESETS": "encoders.registry",
    "load_encoder": "encoders.registry",
    "resolve_config": "encoders.registry",
}

__all__ = [
    "DEFAULT_ENCODER",
    "PRESETS",
    "AdapterSpec",
    "Encoder",
    "EncoderConfig",
    "load_encoder",
    "resolve_config",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'encoders' has no attribute {name!r}")

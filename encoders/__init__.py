"""Text -> vectors with decoder LLMs (LLM2Vec-style attention switch, pooling, adapters)."""

from encoders.config import AdapterSpec, EncoderConfig
from encoders.encoder import Encoder
from encoders.registry import DEFAULT_ENCODER, PRESETS, load_encoder, resolve_config

__all__ = [
    "DEFAULT_ENCODER",
    "PRESETS",
    "AdapterSpec",
    "Encoder",
    "EncoderConfig",
    "load_encoder",
    "resolve_config",
]

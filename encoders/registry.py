"""Resolve an encoder spec (what users type) into an Encoder.

A spec is one of:
- ``smollm2`` / ``smollm2-bi`` / ``smollm2-echo`` / ``minilm``: the bundled models (see
  :data:`PRESETS`);
- a folder with ``encoder_config.json`` (a saved or trained encoder);
- an LLM2Vec checkpoint as llm2vec publishes it: an adapter folder whose base is local, or a
  root holding base / MNTP / supervised folders (:mod:`encoders.llm2vec_format`);
- a sentence-transformers folder (``modules.json``: Transformer, Pooling, optional Normalize;
  its max length, pooling, normalisation and prompts: :mod:`encoders.st_format`);
- a plain local HF model folder (default config on top of it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from encoders.config import CONFIG_FILE, Attention, EncoderConfig, Pooling
from encoders.encoder import Encoder
from encoders.folders import FOLDER_KINDS, folder_config
from encoders.loading import MINILM, SMOLLM2, ModelNotFoundError


def _smollm2(name: str, attention: Attention, pooling: Pooling, **options: Any) -> EncoderConfig:
    """A preset over the bundled SmolLM2 in dtype "auto": bf16 where the CPU has native bf16
    matmuls (2.6x faster here, same retrieval scores: bench/RESULTS.md, dtype section), fp32
    elsewhere."""
    return EncoderConfig(
        name=name, base_model=SMOLLM2, attention=attention, pooling=pooling, dtype="auto", **options
    )


PRESETS: dict[str, EncoderConfig] = {
    config.name: config
    for config in (
        # Untrained decoder: causal attention with position-weighted mean pooling (SGPT / LLM2Vec
        # baselines) until an adapter-trained bidirectional encoder is available.
        _smollm2("smollm2", "causal", "weighted_mean"),
        _smollm2("smollm2-bi", "bidirectional", "mean"),
        # Echo embeddings (Springer et al.): training-free; the text is written twice and the
        # second copy is mean-pooled, so with causal attention every pooled token saw the whole
        # text. max_length 1024: the text is read twice, so a plain 512-token text still fits
        # whole.
        _smollm2(
            "smollm2-echo", "causal", "mean", echo=True, max_length=1024, query_max_length=512
        ),
        EncoderConfig(
            name="minilm",
            base_model=MINILM,
            attention="bidirectional",
            pooling="mean",
            max_length=256,
            query_max_length=256,
        ),
    )
}
PACKAGED = Path(__file__).resolve().parent / "presets"


def _packaged_presets() -> dict[str, EncoderConfig]:
    """Trained encoders shipped inside the package (``encoders/presets/<name>/``: an fp16 LoRA
    adapter over a bundled base model, written by ``bench/ship_adapter.py``)."""
    out: dict[str, EncoderConfig] = {}
    if PACKAGED.is_dir():
        for folder in sorted(PACKAGED.iterdir()):
            if (folder / CONFIG_FILE).is_file():
                out[folder.name] = EncoderConfig.load(folder)
    return out


PRESETS.update(_packaged_presets())
DEFAULT_ENCODER = "smollm2-ember"  # trained here; bench/RESULTS.md, issue 13


def resolve_config(spec: str) -> EncoderConfig:
    if spec in PRESETS:
        return PRESETS[spec]
    path = Path(spec).expanduser()
    config = folder_config(path)
    if config is not None:
        return config
    if (path / "config.json").is_file():
        return EncoderConfig(name=path.name, base_model=str(path.resolve()))
    raise ModelNotFoundError(
        f"encoder {spec!r} is not a preset ({', '.join(PRESETS)}), {FOLDER_KINDS} or a local "
        "HF model folder (config.json)"
    )


def load_encoder(spec: str = DEFAULT_ENCODER, device: str = "cpu") -> Encoder:
    return Encoder.from_config(resolve_config(spec), device=device)

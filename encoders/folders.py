"""Which kind of encoder folder a path is, read into an :class:`EncoderConfig` in one place (for
:func:`encoders.registry.resolve_config` and :meth:`encoders.encoder.Encoder.load`)."""

from __future__ import annotations

from pathlib import Path

from encoders import llm2vec_format, st_format
from encoders.config import CONFIG_FILE, EncoderConfig

FOLDER_KINDS = (
    f"an encoder folder ({CONFIG_FILE}), an LLM2Vec checkpoint (adapter folders), "
    "a sentence-transformers folder (modules.json)"
)


def folder_config(path: Path) -> EncoderConfig | None:
    """An encoder folder (``encoder_config.json``), an LLM2Vec checkpoint as llm2vec publishes
    it (:mod:`encoders.llm2vec_format`) or a sentence-transformers folder
    (:mod:`encoders.st_format`), in that order; None when ``path`` is none of them (a plain HF
    model folder is the caller's call)."""
    if (path / CONFIG_FILE).is_file():
        return EncoderConfig.load(path)
    if llm2vec_format.is_checkpoint(path):
        return llm2vec_format.load_checkpoint(path)
    if st_format.is_st_folder(path):
        return st_format.load_st_folder(path)
    return None

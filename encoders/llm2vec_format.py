"""LLM2Vec checkpoints as llm2vec saves and publishes them, read into an :class:`EncoderConfig`.

llm2vec publishes an encoder as up to three folders:

- the **base model** (a plain HF folder: ``config.json`` + weights, no ``adapter_config.json``);
- the **MNTP adapter** (``adapter_config.json`` + ``adapter_model.safetensors``; its
  ``base_model_name_or_path`` names the base; the published folders also carry the base's
  ``config.json`` and tokenizer, which is what ``LLM2Vec.from_pretrained(mntp_folder)`` reads);
- optionally a **supervised or SimCSE adapter** on top (``LLM2Vec.save``: adapter files plus
  ``llm2vec_config.json`` with ``pooling_mode``, ``max_length``, ``doc_max_length``,
  ``skip_instruction``). Its ``adapter_config.json`` names the *original* base (llm2vec merges
  MNTP into the base before training it), not the MNTP folder, so it cannot be found from the
  supervised folder alone.

Ember accepts, as ``--encoder FOLDER`` / ``EMBER_ENCODER`` / ``Encoder.load``:

1. an adapter folder: its chain of ``base_model_name_or_path`` is followed (an adapter whose
   base is another adapter folder stacks on it) down to a model folder;
2. a **checkpoint root** holding the folders side by side (``base/``, ``mntp/``,
   ``supervised/``, any names): the MNTP adapter is the adapter subfolder with a ``config.json``
   (or, without one, the one without ``llm2vec_config.json``), the other adapter goes on top, and
   a model subfolder is the base when the adapters' named base is not a local folder.

A named base resolves as a local path (absolute, or relative to the adapter folder or its
parent), then as a snapshot in the local Hugging Face cache; never from the network. Every
adapter is merged (as ``LLM2Vec.from_pretrained`` does with MNTP). Settings from
``llm2vec_config.json`` (top adapter first, then MNTP): attention bidirectional (llm2vec's
default; causal for Qwen2, which llm2vec 0.2.3 runs causally: :data:`CAUSAL_IN_LLM2VEC`),
``pooling_mode`` mean / weighted_mean / last_token / eos_token (last token, with the per-family
suffix llm2vec appends as ``text_suffix``), ``max_length`` (queries) and
``min(max_length, doc_max_length)`` (documents), and the chat turn llm2vec wraps around the
inputs of six named instruct models (:data:`CHAT_WRAPS`: ``text_prefix`` before the instruction,
never pooled; the turn's end in ``text_suffix``, pooled as llm2vec pools it). What Ember does not
reproduce is refused with one line: ``bos_token`` pooling and ``skip_instruction: false`` (Ember
never pools the instruction). llm2vec strips the wrapped input; Ember does not, which only
matters for texts with leading or trailing whitespace.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from encoders.config import CONFIG_FILE, AdapterSpec, EncoderConfig
from encoders.jsonl import read_json_object
from encoders.loading import ModelNotFoundError

ADAPTER_FILE = "adapter_config.json"
LLM2VEC_FILE = "llm2vec_config.json"
POOLING = {
    "mean": "mean",
    "weighted_mean": "weighted_mean",
    "last_token": "last_token",
    "eos_token": "last_token",  # with the text suffix llm2vec appends (EOS_SUFFIX)
}
# llm2vec.LLM2Vec.prepare_for_tokenization, pooling_mode "eos_token": what it appends to the
# input, by config class (other model types get nothing: eos_token is then last_token)
EOS_SUFFIX = {"llama": " </s>", "mistral": " </s>", "gemma": "<eos>", "qwen2": "<|endoftext|>"}
# llm2vec 0.2.3's Qwen2BiModel sets is_causal = False on its attention modules but, unlike its
# Llama / Mistral / Gemma models, does not override Qwen2Model._update_causal_mask, so under the
# transformers it pins (4.43-4.44) every forward still gets the causal mask: its "bidirectional"
# Qwen2 is causal (measured: cos 1.000 to the plain causal Qwen2Model at every position, 0.85-0.99
# to true bidirectional attention; bench/RESULTS.md, parity section). Its Qwen2 adapters were
# trained and are served that way, so they load causal.
CAUSAL_IN_LLM2VEC = {"qwen2"}
LLAMA3_BASE = "meta-llama/Meta-Llama-3-8B"  # by name: "<|end_of_text|>" instead
# llm2vec.LLM2Vec.prepare_for_tokenization wraps the whole input (instruction and text) of these
# models, named by the ``_name_or_path`` of the config.json it loads, in a chat turn: (before,
# after). The text's pooled tokens run to the end, so they include what comes after.
CHAT_WRAPS = {
    "meta-llama/Meta-Llama-3-8B-Instruct": ("<|start_header_id|>user<|end_header_id|>\n\n",
                                            "<|eot_id|>"),
    "mistralai/Mistral-7B-Instruct-v0.2": ("[INST] ", " [/INST]"),
    "meta-llama/Llama-2-7b-chat-hf": ("[INST] ", " [/INST]"),
    "google/gemma-2-9b-it": ("<bos><start_of_turn>user\n", "<end_of_turn>"),
    "Qwen/Qwen2-1.5B-Instruct": ("<|im_start|>user\n", "<|im_end|>"),
    "Qwen/Qwen2-7B-Instruct": ("<|im_start|>user\n", "<|im_end|>"),
}  # fmt: skip


class LLM2VecCheckpointError(ModelNotFoundError):
    """A folder that looks like an LLM2Vec checkpoint but cannot be read as one."""


def _read(path: Path) -> dict[str, Any]:
    return read_json_object(path, LLM2VecCheckpointError)


def is_adapter(path: Path) -> bool:
    return (path / ADAPTER_FILE).is_file()


def is_model(path: Path) -> bool:
    return (path / "config.json").is_file() and not is_adapter(path)


def _subfolders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def is_checkpoint(path: Path) -> bool:
    """An adapter folder, or a root folder (no config of its own) holding adapter folders."""
    if not path.is_dir() or (path / CONFIG_FILE).is_file():
        return False
    if is_adapter(path):
        return True
    if (path / "config.json").is_file() or (path / "modules.json").is_file():
        return False
    return any(is_adapter(p) for p in _subfolders(path))


def _hf_cache_snapshot(name: str) -> Path | None:
    """The newest snapshot of ``name`` in the local Hugging Face cache, if one is there."""
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub"
    )
    snapshots = Path(hub) / f"models--{name.replace('/', '--')}" / "snapshots"
    if not snapshots.is_dir():
        return None
    found = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _named_base(adapter: Path, fallback: Path | None) -> Path:
    name = str(_read(adapter / ADAPTER_FILE).get("base_model_name_or_path") or "")
    candidates = [Path(name).expanduser()] if Path(name).is_absolute() else []
    if name and not Path(name).is_absolute():
        candidates += [adapter / name, adapter.parent / name]
    for c in candidates:
        if is_model(c) or is_adapter(c):
            return c.resolve()
    if name and (snap := _hf_cache_snapshot(name)) is not None:
        return snap
    if fallback is not None:
        return fallback
    raise LLM2VecCheckpointError(
        f"{adapter}: its base model {name!r} is not a local folder (nor in the Hugging Face "
        "cache); Ember never downloads weights: put the base folder beside the adapter folders "
        "(a checkpoint root) or write an encoder_config.json naming it"
    )


def _stack(top: Path, fallback: Path | None) -> tuple[Path, list[Path]]:
    """Follow ``base_model_name_or_path`` from ``top`` to a model folder: (base, adapters
    bottom first)."""
    adapters = [top]
    base = _named_base(top, fallback)
    while is_adapter(base):
        if base in adapters:
            raise LLM2VecCheckpointError(f"{top}: adapter folders name each other in a loop")
        adapters.insert(0, base)
        base = _named_base(base, fallback)
    return base, adapters


def _root_stack(root: Path) -> tuple[Path, list[Path]]:
    subs = _subfolders(root)
    adapters = [p for p in subs if is_adapter(p)]
    models = [p for p in subs if is_model(p)]
    fallback = models[0] if len(models) == 1 else None
    if len(adapters) == 1:
        return _stack(adapters[0], fallback)
    if len(adapters) != 2:
        raise LLM2VecCheckpointError(
            f"{root}: {len(adapters)} adapter folders ({', '.join(p.name for p in adapters)}); "
            "a checkpoint root holds the MNTP adapter and at most one adapter on top"
        )
    mntp = [p for p in adapters if (p / "config.json").is_file()]
    if len(mntp) != 1:
        mntp = [p for p in adapters if not (p / LLM2VEC_FILE).is_file()]
    if len(mntp) != 1:
        raise LLM2VecCheckpointError(
            f"{root}: cannot tell the MNTP adapter from the one on top among "
            f"{', '.join(p.name for p in adapters)} (the MNTP folder carries config.json, the "
            "supervised one llm2vec_config.json); write an encoder_config.json instead"
        )
    top = next(p for p in adapters if p != mntp[0])
    base, below = _stack(mntp[0], fallback)
    return base, [*below, top]


def _settings(adapters: list[Path]) -> tuple[dict[str, Any], Path | None]:
    """llm2vec's own config and its file: the top adapter's, else the one below it."""
    for folder in reversed(adapters):
        if (folder / LLM2VEC_FILE).is_file():
            return _read(folder / LLM2VEC_FILE), folder / LLM2VEC_FILE
    return {}, None


def _model_config(base: Path, adapters: list[Path]) -> dict[str, Any]:
    """The model config as llm2vec sees it (its ``_name_or_path`` picks chat templates and the
    eos suffix): the MNTP folder's config.json (the folder it loads), else the base's."""
    for folder in [*adapters, base]:
        if (folder / "config.json").is_file():
            return _read(folder / "config.json")
    return {}


def _eos_suffix(config: dict[str, Any]) -> str:
    if config.get("_name_or_path") == LLAMA3_BASE:
        return "<|end_of_text|>"
    return EOS_SUFFIX.get(str(config.get("model_type", "")), "")


def load_checkpoint(path: Path) -> EncoderConfig:
    """The :class:`EncoderConfig` that reproduces ``LLM2Vec.from_pretrained(mntp,
    peft_model_name_or_path=top)`` for an LLM2Vec checkpoint folder (see the module doc)."""
    path = path.resolve()
    base, adapters = _stack(path, None) if is_adapter(path) else _root_stack(path)
    settings, source = _settings(adapters)
    where = str(source or path)
    mode = str(settings.get("pooling_mode", "mean"))
    if mode not in POOLING:
        raise LLM2VecCheckpointError(
            f"{where}: pooling_mode {mode!r} is not supported by Ember's LLM2Vec import "
            f"(supported: {', '.join(POOLING)})"
        )
    if settings.get("skip_instruction", True) is False:
        raise LLM2VecCheckpointError(
            f"{where}: skip_instruction false pools the instruction tokens; Ember never does"
        )
    model_config = _model_config(base, adapters)
    name = str(model_config.get("_name_or_path") or "")
    before, after = CHAT_WRAPS.get(name, ("", ""))
    model_type = str(model_config.get("model_type", ""))
    max_length = int(settings.get("max_length", 512))
    doc_max_length = int(settings.get("doc_max_length", 400))
    return EncoderConfig(
        name=path.name,
        base_model=str(base),
        attention="causal" if model_type in CAUSAL_IN_LLM2VEC else "bidirectional",
        pooling=POOLING[mode],  # type: ignore[arg-type]
        text_prefix=before,
        text_suffix=after + (_eos_suffix(model_config) if mode == "eos_token" else ""),
        max_length=max(2, min(max_length, doc_max_length)),
        query_max_length=max(2, max_length),
        adapters=[AdapterSpec(path=str(a), merged=True) for a in adapters],
    )

"""Ember encoders written out for use elsewhere: a sentence-transformers folder, or a plain HF
folder with merged weights that Ember loads back (``ember export``).

``sentence-transformers``: the legacy folder layout every sentence-transformers release since 2.x
reads (``modules.json``, ``sentence_bert_config.json``, ``1_Pooling/config.json``,
``config_sentence_transformers.json`` with the prompts), over the base model with every adapter
merged, saved in fp32. Ember's vector is ``pool -> [unit -> (x - mean) / std (-> @ W)] -> unit``;
the standardisation becomes ``Normalize -> Dense(diag(1 / std) @ W, -mean / std @ W, identity)``,
then ``Normalize``. The task instruction becomes the ``query`` prompt (``Pooling.include_prompt``
false for mean pooling, which is how Ember leaves the instruction out).

What sentence-transformers cannot compute the same way is refused with one line saying why,
never exported approximately (:class:`ExportError`): decoders run bidirectionally (it runs a
decoder with its own causal attention), LLaRA and MoEE encoders, echo embeddings, trainable
poolers, a text suffix, mean pooling over a tokenizer that adds BOS (Ember never pools the BOS),
weighted mean with a query prompt (sentence-transformers counts the position weights from the
prompt's first token, Ember from the text's), and a query prompt whose tokens in context differ
from its tokens alone (sentence-transformers pools after the prompt's length measured alone; a
byte-level BPE makes the prompt's trailing space a token of its own there, but merges it into
the next word in context for most words and not for others, so no fixed length is right for
every text, and stripping the space would only move the error to the other words).

``hf``: the merged weights (fp32), the tokenizer and an ``encoder_config.json`` naming them
(``base_model: "."``, no adapters; trainable pooler, whitening matrix and MoEE statistics
carried along), so ``ember encode --encoder OUT`` gives the source encoder's vectors for every
kind but LLaRA. Both formats get a model card (README.md) with the quality rows of the eval
results given (``ember eval ... --json`` output).

The folder is written under a temporary name beside ``out`` and renamed into place, so a failed
export never leaves a half-written folder.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from encoders import st_format
from encoders.config import EncoderConfig
from encoders.errors import EmberError
from encoders.model_card import ResultsError, check_results, ember_version, model_card, read_results

Format = Literal["sentence-transformers", "hf"]
FORMATS: tuple[Format, ...] = ("sentence-transformers", "hf")
# Ember pooling -> sentence-transformers mode, and mode -> its legacy Pooling key (the readers'
# tables, inverted)
ST_POOLING = {ember: st for st, ember in st_format.POOLING.items()}
_POOLING_KEYS = {mode: key for key, mode in st_format.LEGACY_POOLING.items()}


class ExportError(EmberError, ValueError):
    """An encoder the chosen format cannot represent, or bad export input (bad eval results
    raise :class:`encoders.model_card.ResultsError`)."""


@dataclass
class ExportReport:
    """What was written: the folder, its format and the prompts a user must pass."""

    out: Path
    format: Format
    query_prompt: str = ""
    notes: list[str] = field(default_factory=list)


# ---- checks ------------------------------------------------------------------------------


def st_refusal(config: EncoderConfig, decoder: bool) -> str | None:
    """Why sentence-transformers cannot reproduce this encoder's vectors (None: it can), from the
    config alone; the tokenizer checks come later (:func:`_prompt_refusal`)."""
    if config.kind == "moee":
        return (
            "MoEE vectors are built from the routing weights of every MoE layer; "
            "sentence-transformers has no module that reads them (use --format hf)"
        )
    if config.kind == "llara":
        return (
            "LLaRA pools EBAE/EBAR placeholder tokens after its prompt templates; "
            "sentence-transformers has no module for them"
        )
    if decoder and config.attention == "bidirectional":
        return (
            "a decoder run with bidirectional attention: sentence-transformers runs decoders with "
            "their own causal attention, so its vectors would differ (use --format hf)"
        )
    if config.pooler is not None:
        return f"trainable pooling {config.pooling!r} has no sentence-transformers module"
    if config.echo:
        return "echo embeddings pool the second copy of the text; sentence-transformers cannot"
    if config.text_suffix or config.text_prefix:
        return (
            f"text_prefix {config.text_prefix!r} / text_suffix {config.text_suffix!r}: "
            "sentence-transformers adds nothing around texts"
        )
    if config.pooling not in ST_POOLING:
        return f"pooling {config.pooling!r} has no sentence-transformers Pooling mode"
    return None


def _prompt_refusal(encoder: Any, instruction: str | None) -> str | None:
    """Checks that need the tokenizer: BOS under mean pooling, and where pooling starts after
    the query and document prompts (``pool_prompt`` pools from the first token, as
    sentence-transformers' ``include_prompt`` does: nothing to check then)."""
    config = encoder.config
    pooling = config.pooling
    if config.pool_prompt or pooling in ("last_token", "first_token"):
        return None
    if encoder.decoder and st_format.adds_bos(encoder.tokenizer):
        return (
            f"{pooling} pooling over a tokenizer that adds BOS: Ember leaves the BOS out of the "
            "mean, sentence-transformers pools it"
        )
    for query, role in ((True, "query"), (False, "document")):
        prompt = config.prefix(instruction, query=query)
        if not prompt:
            continue
        if pooling == "weighted_mean":
            return (
                f"weighted_mean with a {role} prompt: sentence-transformers counts the position "
                "weights from the prompt's first token, Ember from the text's (--no-instruction "
                "exports queries without one)"
            )
        length = st_format.st_prompt_length(encoder.tokenizer, prompt)
        starts = st_format.prompt_starts(encoder.tokenizer, prompt)
        if starts != {length}:
            return (
                f"{role} prompt {prompt!r} is {length} tokens alone but {sorted(starts)} in "
                "front of texts; sentence-transformers pools after a fixed prompt length, so "
                "it would pool a different part of some texts (a byte-level BPE merges the "
                "prompt's trailing space into the next word for some words and not others); "
                "pass --no-instruction, or an instruction that tokenises the same both ways"
            )
    return None


# ---- writing -----------------------------------------------------------------------------


def export_encoder(
    config: EncoderConfig,
    out: str | Path,
    fmt: Format = "sentence-transformers",
    *,
    instruction: str | None = None,
    results: Sequence[dict[str, Any]] = (),
    source: str = "",
    force: bool = False,
) -> ExportReport:
    """Write ``config``'s encoder to ``out`` in ``fmt``. ``instruction`` is the query
    instruction (None: queries without one); ``results`` are eval result dicts for the card."""
    from encoders.encoder import Encoder
    from encoders.loading import is_decoder

    if fmt not in FORMATS:
        raise ExportError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    target = Path(out)
    if target.exists() and not force:
        raise ExportError(f"OUT: {target} exists (--force replaces it)")
    if target.exists() and not target.is_dir():
        raise ExportError(f"OUT: {target} is a file, not a folder")
    check_results(results, config)
    if fmt == "hf" and config.kind == "llara":
        raise ExportError(
            "LLaRA keeps its placeholder tokens and settings beside its adapters; --format hf "
            "does not carry them yet"
        )
    if fmt == "sentence-transformers":
        from transformers import AutoConfig

        from encoders.loading import resolve_model_path

        model_config = AutoConfig.from_pretrained(resolve_model_path(config.base_model))
        why = st_refusal(config, is_decoder(model_config))
        if why:
            raise ExportError(f"--format sentence-transformers: {why}")

    # fp32 whatever EMBER_DTYPE says, every adapter merged: exported weights are what the
    # vectors were defined on
    load = config.model_copy(
        update={"adapters": [a.model_copy(update={"merged": True}) for a in config.adapters]}
    )
    encoder = Encoder.from_config(load, dtype="float32")
    prompt = config.prefix(instruction, query=True)
    if fmt == "sentence-transformers":
        why = _prompt_refusal(encoder, instruction)
        if why:
            raise ExportError(f"--format sentence-transformers: {why}")

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        report = ExportReport(out=target, format=fmt, query_prompt=prompt)
        _save_model(encoder, tmp)
        if fmt == "sentence-transformers":
            _write_st(encoder, tmp, prompt, report)
        else:
            _write_hf(config, tmp)
        (tmp / "README.md").write_text(model_card(config, fmt, prompt, results, source, report))
        _replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _replace(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``; an existing ``target`` goes only once the new one is in."""
    if not target.exists():
        tmp.rename(target)
        return
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _save_model(encoder: Any, folder: Path) -> None:
    model = encoder.model
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer = encoder.tokenizer
    # Ember pads on the right with position ids counted over real tokens; sentence-transformers
    # lets the model count positions from 0, which agrees only with right padding
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(folder)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _write_st(encoder: Any, folder: Path, prompt: str, report: ExportReport) -> None:
    config: EncoderConfig = encoder.config
    dim = encoder.dim
    mode = ST_POOLING[config.pooling]
    modules: list[dict[str, Any]] = [
        {"path": "", "type": "sentence_transformers.models.Transformer"},
        {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    _write_json(folder / "sentence_bert_config.json",
                {"max_seq_length": config.max_length, "do_lower_case": False})  # fmt: skip
    pooling: dict[str, Any] = {"word_embedding_dimension": dim}
    pooling.update({key: name == mode for name, key in _POOLING_KEYS.items()})
    # mean pools the text only (the prompt masked as Ember leaves the instruction out); last /
    # first token pick from the whole sequence in Ember, as with the prompt included here
    pooling["include_prompt"] = config.pool_prompt or mode not in ("mean", "weightedmean")
    _write_json(folder / "1_Pooling" / "config.json", pooling)
    if config.standardize is not None:
        from safetensors.torch import save_file

        from encoders.standardize import whitening_matrix

        stats = config.standardize
        scale = np.diag(1.0 / np.asarray(stats.std, dtype=np.float64))
        matrix = whitening_matrix(stats)
        rotate = np.eye(dim) if matrix is None else matrix.astype(np.float64)
        weight = scale @ rotate  # x @ weight + bias = ((x - mean) / std) @ W
        bias = -(np.asarray(stats.mean, dtype=np.float64) / np.asarray(stats.std)) @ rotate
        dense = folder / "3_Dense"
        _write_json(dense / "config.json", {
            "in_features": dim, "out_features": int(weight.shape[1]), "bias": True,
            "activation_function": "torch.nn.modules.linear.Identity",
        })  # fmt: skip
        save_file(
            {
                "linear.weight": torch.tensor(weight.T, dtype=torch.float32).contiguous(),
                "linear.bias": torch.tensor(bias, dtype=torch.float32),
            },
            str(dense / "model.safetensors"),
        )
        modules.append({"path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        modules.append({"path": "3_Dense", "type": "sentence_transformers.models.Dense"})
        report.notes.append("standardisation written as Normalize -> Dense (identity activation)")
    if config.normalize:
        idx = len(modules)
        modules.append(
            {"path": f"{idx}_Normalize", "type": "sentence_transformers.models.Normalize"}
        )
    for module in modules:
        if module["path"]:
            (folder / module["path"]).mkdir(parents=True, exist_ok=True)
    _write_json(
        folder / "modules.json",
        [{"idx": i, "name": str(i), **m} for i, m in enumerate(modules)],
    )
    _write_json(folder / "config_sentence_transformers.json", {
        "__version__": {"sentence_transformers": "3.0.0", "ember": ember_version()},
        "prompts": {"query": prompt, "document": config.prefix(None)},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    })  # fmt: skip
    if config.query_max_length < config.max_length:
        report.notes.append(
            f"sentence-transformers cuts every text at {config.max_length} tokens; Ember cuts "
            f"queries at {config.query_max_length} (the same for shorter queries)"
        )


def _write_hf(config: EncoderConfig, folder: Path) -> None:
    update: dict[str, Any] = {"base_model": ".", "adapters": [], "dtype": config.dtype}
    if config.pooler is not None:
        shutil.copytree(config.pooler, folder / "pooler")
        update["pooler"] = "pooler"
    stats = config.standardize
    if stats is not None and stats.whitening:
        name = Path(stats.whitening).name
        shutil.copy2(stats.whitening, folder / name)
        update["standardize"] = stats.model_copy(update={"whitening": name})
    config.model_copy(update=update).save(folder)


__all__ = [
    "FORMATS",
    "ExportError",
    "ExportReport",
    "ResultsError",
    "export_encoder",
    "model_card",
    "read_results",
    "st_refusal",
]

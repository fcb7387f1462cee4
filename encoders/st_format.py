"""sentence-transformers model folders, read into an :class:`EncoderConfig`.

A sentence-transformers folder (``SentenceTransformer.save``, or as published) holds
``modules.json``, the list of modules the model runs in order, each with a ``type`` and a
``path`` inside the folder:

- a **Transformer** (path ``""``: the folder itself, or a subfolder): an HF model folder
  (``config.json``, weights, tokenizer) plus ``sentence_bert_config.json`` (``max_seq_length``,
  ``do_lower_case``; sentence-transformers 6 saves the length as the tokenizer's
  ``model_max_length`` instead, capped at the model's ``max_position_embeddings`` on load);
- a **Pooling** module (``<path>/config.json``: ``pooling_mode``, or the legacy
  ``pooling_mode_mean_tokens``-style booleans, and ``include_prompt``, default true);
- optionally **Normalize** (L2-normalised vectors).

``config_sentence_transformers.json`` names ``prompts`` (prefixes by name) and
``default_prompt_name``.

Ember accepts exactly Transformer, Pooling and an optional Normalize, as ``--encoder FOLDER`` /
``EMBER_ENCODER`` / ``Encoder.load``, and maps them so Ember's vectors are sentence-transformers':
the max length (documents and queries), pooling ``mean`` / ``weightedmean`` / ``lasttoken`` /
``cls`` (Ember's ``mean`` / ``weighted_mean`` / ``last_token`` / ``first_token``), Normalize,
attention bidirectional for encoder-only models and causal for decoders (as the model runs in
sentence-transformers). Prompts: queries get ``prompts["query"]`` and documents the first of
``prompts["document"]`` / ``["passage"]`` / ``["corpus"]`` (``encode_query`` /
``encode_document``); a role without one gets the ``default_prompt_name`` prompt, else none.
The query prompt replaces Ember's task instructions: a folder without one reads queries bare,
as sentence-transformers does. (sentence-transformers 6.2 itself never falls back from
``document`` to ``passage`` / ``corpus`` nor to the default prompt in ``encode_query`` /
``encode_document``: it seeds empty ``query`` and ``document`` prompts; Ember follows the
documented rule, which earlier releases implemented.) ``include_prompt`` true (the default) is
``pool_prompt``: every token is pooled from the first, [CLS] / BOS and prompt included.

What Ember does not reproduce is refused with one line naming the file: any other module
(``Dense``, custom modules), ``max`` / ``mean_sqrt_len_tokens`` or several pooling modes,
``do_lower_case`` over a tokenizer that does not lowercase already, left truncation, other
transformer tasks or outputs, and with ``include_prompt`` false: ``cls`` or ``weightedmean``
pooling with a prompt (sentence-transformers then pools the first token after the prompt, and
keeps the position weights counted from the prompt's start), a prompt whose tokens alone are
not the tokens it has in front of a text (a byte-level BPE prompt ending in a space: measured
alone, the space is a token of its own), and mean pooling in a decoder whose tokenizer adds a
BOS token when a role has no prompt (sentence-transformers pools that BOS, Ember never pools a
decoder's BOS outside ``pool_prompt``).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

from encoders.config import CONFIG_FILE, EncoderConfig
from encoders.jsonl import read_json_object
from encoders.loading import ModelNotFoundError, is_decoder, load_tokenizer
from encoders.pooling import pool_start

MODULES_FILE = "modules.json"
ST_CONFIG_FILE = "config_sentence_transformers.json"
# Transformer module config, by the names sentence-transformers has used (it tries them in order)
TRANSFORMER_CONFIG_FILES = (
    "sentence_bert_config.json",
    "sentence_roberta_config.json",
    "sentence_distilbert_config.json",
    "sentence_camembert_config.json",
    "sentence_albert_config.json",
    "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json",
)
POOLING = {
    "mean": "mean",
    "weightedmean": "weighted_mean",
    "lasttoken": "last_token",
    "cls": "first_token",
}
# sentence_transformers' legacy Pooling booleans, in its order of concatenation
LEGACY_POOLING = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
DOCUMENT_PROMPTS = ("document", "passage", "corpus")  # encode_document's candidates, in order
# texts a prompt is tokenised in front of, to check it tokenises alone as it does in context
PROBE_TEXTS = ("hello world", "The claim", "42 cells", "a")
TOKENIZER_KEYS = {"model_max_length", "padding_side"}  # processor kwargs that do not change ids
UNBOUNDED = 10**9


class STFormatError(ModelNotFoundError):
    """A folder that looks like a sentence-transformers model but cannot be read as one."""


def _read(path: Path) -> dict[str, Any]:
    return read_json_object(path, STFormatError)


def is_st_folder(path: Path) -> bool:
    """A folder with ``modules.json`` (and no ``encoder_config.json`` of its own)."""
    return path.is_dir() and (path / MODULES_FILE).is_file() and not (path / CONFIG_FILE).is_file()


def _modules(path: Path) -> tuple[Path, Path, bool]:
    """(Transformer folder, Pooling folder, Normalize present) from ``modules.json``."""
    file = path / MODULES_FILE
    try:
        modules = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise STFormatError(f"{file}: not readable JSON ({exc})") from exc
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise STFormatError(f"{file}: expected a list of modules")
    kinds = []
    for i, module in enumerate(modules):
        kind = str(module.get("type", ""))
        name = kind.rsplit(".", 1)[-1]
        if not kind.startswith("sentence_transformers.") or name not in {
            "Transformer",
            "Pooling",
            "Normalize",
        }:
            raise STFormatError(
                f"{file}: module {i} ({kind or 'no type'}) is not supported; Ember reads "
                "Transformer + Pooling (+ Normalize) folders only"
            )
        kinds.append(name)
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise STFormatError(
            f"{file}: modules {' + '.join(kinds) or 'none'}; Ember reads exactly Transformer, "
            "Pooling and an optional Normalize, in that order"
        )
    folders = [path / str(m.get("path", "")) for m in modules[:2]]
    if not (folders[0] / "config.json").is_file():
        raise STFormatError(f"{file}: the Transformer folder {folders[0]} has no config.json")
    return folders[0], folders[1], len(kinds) == 3


def _transformer_settings(folder: Path) -> tuple[dict[str, Any], Path]:
    for name in TRANSFORMER_CONFIG_FILES:
        if (folder / name).is_file():
            return _read(folder / name), folder / name
    return {}, folder / TRANSFORMER_CONFIG_FILES[0]


def _pooling(folder: Path) -> tuple[str, bool, Path]:
    """(sentence-transformers pooling mode, include_prompt, its file)."""
    file = folder / "config.json"
    config = _read(file)
    mode: Any = config.get("pooling_mode")
    if mode is None:
        active = [m for key, m in LEGACY_POOLING.items() if config.get(key, False)]
        mode = active or ["mean"]
    modes = [mode] if isinstance(mode, str) else list(mode)
    if len(modes) != 1:
        raise STFormatError(
            f"{file}: pooling modes {', '.join(map(str, modes))} concatenated; Ember pools one way"
        )
    if modes[0] not in POOLING:
        raise STFormatError(
            f"{file}: pooling mode {modes[0]!r} is not supported (supported: {', '.join(POOLING)})"
        )
    return str(modes[0]), bool(config.get("include_prompt", True)), file


class Prompts(NamedTuple):
    query: str
    document: str


def _prompts(path: Path) -> Prompts:
    """The query and document prompts as ``encode_query`` / ``encode_document`` choose them."""
    config = _read(path / ST_CONFIG_FILE) if (path / ST_CONFIG_FILE).is_file() else {}
    prompts = config.get("prompts") or {}
    if not isinstance(prompts, dict):
        raise STFormatError(f"{path / ST_CONFIG_FILE}: prompts must be an object")
    default_name = config.get("default_prompt_name")
    default = str(prompts.get(default_name) or "") if default_name else ""
    query = str(prompts.get("query") or "") or default
    document = next((str(prompts[n]) for n in DOCUMENT_PROMPTS if prompts.get(n)), default)
    return Prompts(query, document)


def _max_length(settings: dict[str, Any], folder: Path, model: dict[str, Any]) -> int:
    """sentence-transformers' max_seq_length: sentence_bert_config's (or the processor kwargs'
    ``model_max_length``) as given, else the tokenizer's capped at max_position_embeddings."""
    processor = settings.get("processor_kwargs") or settings.get("tokenizer_args") or {}
    given = processor.get("model_max_length") or settings.get("max_seq_length")
    positions = model.get("max_position_embeddings") or model.get("n_positions")
    if given is None:
        file = folder / "tokenizer_config.json"
        given = _read(file).get("model_max_length") if file.is_file() else None
        given = int(given or UNBOUNDED)
        if positions and int(positions) > 0:
            given = min(given, int(positions))
    length = int(given)
    if positions and int(positions) > 0:
        length = min(length, int(positions))  # more would fail in the model anyway
    if length >= UNBOUNDED:
        raise STFormatError(f"{folder}: no max length (max_seq_length nor model_max_length)")
    return max(2, length)


def _check_transformer(settings: dict[str, Any], file: Path) -> None:
    task = settings.get("transformer_task", "feature-extraction")
    if task != "feature-extraction":
        raise STFormatError(f"{file}: transformer_task {task!r}; Ember reads feature-extraction")
    output = settings.get("module_output_name", "token_embeddings")
    text = (settings.get("modality_config") or {"text": {}}).get("text")
    if output != "token_embeddings" or not isinstance(text, dict):
        raise STFormatError(f"{file}: Ember pools the token embeddings of text inputs only")
    if text.get("method_output_name", "last_hidden_state") != "last_hidden_state":
        raise STFormatError(
            f"{file}: the text output {text.get('method_output_name')!r} is not the last "
            "hidden state, which Ember pools"
        )
    if settings.get("config_kwargs") or settings.get("config_args"):
        raise STFormatError(f"{file}: config overrides (config_kwargs) are not supported")
    processor = settings.get("processor_kwargs") or settings.get("tokenizer_args") or {}
    extra = sorted(set(processor) - TOKENIZER_KEYS)
    if extra:
        raise STFormatError(f"{file}: tokenizer arguments {', '.join(extra)} are not supported")


def st_prompt_length(tokenizer: Any, prompt: str) -> int:
    """sentence-transformers' ``_get_prompt_length``: the prompt tokenised alone, less a
    trailing special token."""
    ids = list(tokenizer(prompt)["input_ids"])
    return len(ids) - 1 if ids and ids[-1] in tokenizer.all_special_ids else len(ids)


def prompt_starts(tokenizer: Any, prompt: str) -> set[int]:
    """Where Ember's pooling starts (:func:`encoders.pooling.pool_start`) in ``prompt + text``
    for each of :data:`PROBE_TEXTS`: one value equal to :func:`st_prompt_length` when the prompt
    tokenises alone as it does in context."""
    starts = set()
    for text in PROBE_TEXTS:
        offsets = tokenizer(prompt + text, return_offsets_mapping=True)["offset_mapping"]
        starts.add(pool_start(offsets, len(prompt)))
    return starts


def adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts a BOS token in front of every text."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


def _check_prompts(tokenizer: Any, mode: str, decoder: bool, prompts: Prompts, file: Path) -> None:
    """With ``include_prompt`` false: refuse what Ember would pool differently (module doc)."""
    given = [p for p in prompts if p]
    if given and mode in ("cls", "weightedmean"):
        why = (
            "it pools the first token after the prompt"
            if mode == "cls"
            else "its position weights count from the prompt's start"
        )
        raise STFormatError(
            f"{file}: {mode} pooling with include_prompt false and a prompt ({given[0]!r}) is "
            f"not reproduced by Ember ({why})"
        )
    if mode == "mean":
        _check_bos(tokenizer, decoder, len(given) < len(prompts), file)
    for prompt in given:  # lasttoken too: a text inside ST's prompt length pools a zero vector
        alone = st_prompt_length(tokenizer, prompt)
        if prompt_starts(tokenizer, prompt) != {alone}:
            raise STFormatError(
                f"{file}: the prompt {prompt!r} is {alone} tokens alone but ends elsewhere in "
                "front of a text (a trailing space?), so sentence-transformers' include_prompt "
                "false leaves out other tokens than the prompt's; Ember refuses it"
            )


def _check_bos(tokenizer: Any, decoder: bool, unprompted: bool, file: Path) -> None:
    if decoder and adds_bos(tokenizer) and unprompted:
        raise STFormatError(
            f"{file}: mean pooling with include_prompt false in a decoder whose tokenizer adds "
            "BOS: sentence-transformers pools the BOS of texts without a prompt, Ember does not"
        )


def load_st_folder(path: Path) -> EncoderConfig:
    """The :class:`EncoderConfig` that reproduces ``SentenceTransformer(path)``'s
    ``encode_query`` / ``encode_document`` (see the module doc)."""
    path = path.resolve()
    transformer, pooling_folder, normalize = _modules(path)
    settings, settings_file = _transformer_settings(transformer)
    _check_transformer(settings, settings_file)
    mode, include_prompt, pooling_file = _pooling(pooling_folder)
    model = _read(transformer / "config.json")
    decoder = is_decoder(SimpleNamespace(model_type=model.get("model_type", "")))
    try:
        tokenizer = load_tokenizer(transformer)
    except (OSError, ValueError) as exc:
        raise STFormatError(f"{transformer}: tokenizer not readable ({exc})") from exc
    except ModelNotFoundError as exc:
        raise STFormatError(str(exc)) from exc
    if tokenizer.truncation_side != "right":
        raise STFormatError(
            f"{transformer}: truncation_side {tokenizer.truncation_side!r}; Ember truncates on "
            "the right"
        )
    if settings.get("do_lower_case"):
        normalizer = tokenizer.backend_tokenizer.normalizer
        if normalizer is None or normalizer.normalize_str("AbC") != "abc":
            raise STFormatError(
                f"{settings_file}: do_lower_case true over a tokenizer that does not lowercase; "
                "Ember does not lowercase texts"
            )
    prompts = _prompts(path)
    if not include_prompt:
        _check_prompts(tokenizer, mode, decoder, prompts, pooling_file)
    length = _max_length(settings, transformer, model)
    return EncoderConfig(
        name=path.name,
        base_model=str(transformer),
        attention="causal" if decoder else "bidirectional",
        pooling=POOLING[mode],  # type: ignore[arg-type]
        max_length=length,
        query_max_length=length,
        normalize=normalize,
        query_prompt=prompts.query,
        document_prompt=prompts.document,
        pool_prompt=include_prompt,
    )

"""The model a training stage trains, and the encoder folder it writes.

A stage reads an input encoder, merges its whole adapter stack into the base weights, and puts a
new LoRA adapter on the base model's module tree (what ``AutoModel`` loads), so the saved adapter
loads with :func:`encoders.adapters.apply_adapters` onto ``Encoder.model``. Stages that need an
LM head (MNTP, LLaRA) load ``AutoModelForCausalLM``, wrap only its inner base model with peft and
apply the (frozen) head themselves.

Output folder::

    out/encoder_config.json   adapters = copied input stack (merged) + adapter (this stage)
    out/adapter/              the new LoRA adapter (peft format)
    out/stack/NN-<name>/      copies of the input encoder's adapters (small; self-contained)
    out/base/                 LLaRA only: base model with resized embeddings + tokenizer
    out/checkpoints/step-N/   resumable training state
    out/train_args.json, out/train_log.jsonl
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from encoders.adapters import apply_adapters
from encoders.config import AdapterSpec, EncoderConfig
from encoders.encoder import Encoder
from encoders.errors import EmberError
from encoders.llara import LlaraSettings, add_placeholder_tokens, token_id
from encoders.loading import (
    default_attn_implementation,
    load_base_model,
    load_tokenizer,
    resolve_model_path,
    weights_dtype,
)
from encoders.types import encoder_class

ADAPTER_DIR = "adapter"
STACK_DIR = "stack"
BASE_DIR = "base"
POOLER_DIR = "pooler"


class StageError(EmberError, RuntimeError):
    pass


@dataclass
class LoraSettings:
    r: int
    alpha: float
    dropout: float
    targets: list[str]


@dataclass
class StageModel:
    """What a stage trains: ``encoder.model`` is the peft model (or the frozen base)."""

    encoder: Encoder
    peft_model: nn.Module
    lm_head: nn.Module | None
    input_config: EncoderConfig
    output_config: EncoderConfig  # paths relative to the output folder
    stack: list[tuple[Path, str]]  # (source folder, destination relative to out)


def find_target_modules(model: nn.Module, wanted: list[str]) -> list[str]:
    """Names (last component) of the linear layers to adapt that exist in ``model``."""
    linear_names: set[str] = set()
    found: set[str] = set()
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) and type(module).__name__ != "Conv1D":
            continue
        leaf = name.rsplit(".", 1)[-1]
        linear_names.add(leaf)
        if leaf in wanted:
            found.add(leaf)
    if not found:
        raise StageError(
            f"none of the LoRA target modules {wanted} exist in {type(model).__name__}; "
            f"its linear layers are: {', '.join(sorted(linear_names))}"
        )
    return sorted(found)


def set_dropout(model: nn.Module, p: float) -> int:
    """Set every dropout of the model (nn.Dropout modules, LoRA dropout included, and the
    ``attention_dropout`` rate attention modules read in training mode); returns how many."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
            count += 1
        rate = getattr(module, "attention_dropout", None)
        if isinstance(rate, float):
            setattr(module, "attention_dropout", p)  # noqa: B010 (typed as Tensor | Module)
            count += 1
    return count


def _input_embedding_name(model: Any) -> str:
    embeddings = model.get_input_embeddings()
    for name, module in model.named_modules():
        if module is embeddings:
            return name.rsplit(".", 1)[-1]
    raise StageError("cannot find the input embedding module")


def _init_new_rows(weight: torch.Tensor, first_new: int, seed: int) -> None:
    """New token rows = mean of the old rows + small seeded noise (distinct placeholders)."""
    if first_new >= weight.shape[0]:
        return
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        old = weight[:first_new]
        noise = torch.randn(weight.shape[0] - first_new, weight.shape[1], generator=gen)
        weight[first_new:] = (old.mean(dim=0) + noise * old.std(dim=0) * 0.1).to(weight.dtype)


def build_stage_model(
    input_config: EncoderConfig,
    *,
    stage: str,
    lora: LoraSettings | None,
    need_lm_head: bool,
    output_overrides: dict[str, Any],
    llara: LlaraSettings | None = None,
    llara_base_dir: Path | None = None,
    train_placeholders: bool = True,
    seed: int = 0,
) -> StageModel:
    """Load the input encoder with its adapters merged, add the new adapter, and describe the
    output encoder. ``lora`` None trains no adapter (a frozen model under a new pooler).

    LLaRA (``llara`` given): the placeholder tokens are added to the tokenizer, the embeddings
    resized, and the merged, resized model + tokenizer + ``llara.json`` saved to
    ``llara_base_dir`` before the adapter is added; the output encoder's base is that copy.
    """
    if input_config.kind == "moee":
        raise StageError("training a moee encoder is not supported: train its llm2vec encoder")
    path = resolve_model_path(input_config.base_model)
    tokenizer: PreTrainedTokenizerBase = load_tokenizer(path)
    lm_head: nn.Module | None = None
    placeholder_ids: list[int] = []
    if need_lm_head or llara is not None:
        impl = input_config.attn_implementation or default_attn_implementation(
            AutoConfig.from_pretrained(path)
        )
        causal = AutoModelForCausalLM.from_pretrained(
            path, dtype=_DTYPES[weights_dtype(input_config.dtype)], attn_implementation=impl
        )
        lm_head = causal.get_output_embeddings()
        if lm_head is None:
            raise StageError(f"{path}: the model has no LM head (needed by {stage})")
        base: nn.Module = apply_adapters(causal.base_model, _all_merged(input_config))
        if llara is not None:
            if llara_base_dir is None:
                raise StageError("LLaRA needs a folder for its base model copy")
            placeholder_ids = _add_llara_tokens(causal, tokenizer, llara, seed)
            llara_base_dir.mkdir(parents=True, exist_ok=True)
            causal.save_pretrained(llara_base_dir)
            tokenizer.save_pretrained(llara_base_dir)
            llara.save(llara_base_dir)
            base = causal.base_model
            lm_head = causal.get_output_embeddings()
            path = llara_base_dir
        assert lm_head is not None
        lm_head.requires_grad_(False)
    else:
        base = load_base_model(path, input_config.dtype, input_config.attn_implementation)
        base = apply_adapters(base, _all_merged(input_config))

    peft_model: nn.Module
    if lora is not None:
        config_kwargs: dict[str, Any] = {
            "r": lora.r,
            "lora_alpha": lora.alpha,
            "lora_dropout": lora.dropout,
            "target_modules": find_target_modules(base, lora.targets),
        }
        if llara is not None and train_placeholders:
            config_kwargs["trainable_token_indices"] = {
                _input_embedding_name(base): placeholder_ids
            }
        peft_model = get_peft_model(base, LoraConfig(**config_kwargs))
    else:
        base.requires_grad_(False)
        peft_model = base

    # The output encoder, paths relative to the output folder.
    stack: list[tuple[Path, str]] = []
    adapters: list[AdapterSpec] = []
    base_model = input_config.base_model
    if llara is None:
        for i, spec in enumerate(input_config.adapters):
            rel = f"{STACK_DIR}/{i:02d}"
            stack.append((Path(spec.path), rel))
            adapters.append(AdapterSpec(path=rel, merged=True))
    else:
        base_model = BASE_DIR  # the input stack is merged into the saved base copy
    if lora is not None:
        adapters.append(AdapterSpec(path=ADAPTER_DIR, merged=True))
    # Statistics fitted on the input model's vectors do not describe the trained one: refit.
    update: dict[str, Any] = {
        "base_model": base_model,
        "adapters": adapters,
        "standardize": None,
        **output_overrides,
    }
    carried_pooler: Path | None = None
    if "pooler" not in output_overrides and input_config.pooler:
        if update.get("pooling", input_config.pooling) == input_config.pooling:
            carried_pooler = Path(input_config.pooler)  # kept, frozen
            stack.append((carried_pooler, POOLER_DIR))
            update["pooler"] = POOLER_DIR
        else:
            update["pooler"] = None
    output_config = input_config.model_copy(update=update)
    EncoderConfig.model_validate(output_config.model_dump())  # consistent pooling / pooler
    runtime_config = output_config.model_copy(update={"base_model": str(path), "adapters": []})
    encoder = encoder_class(output_config.kind)(runtime_config, peft_model, tokenizer)
    if carried_pooler is not None:
        from encoders.poolers import load_pooler

        frozen = load_pooler(carried_pooler)
        for param in frozen.parameters():
            param.requires_grad_(False)
        encoder.pooler = frozen
    return StageModel(
        encoder=encoder,
        peft_model=peft_model,
        lm_head=lm_head,
        input_config=input_config,
        output_config=output_config,
        stack=stack,
    )


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _all_merged(config: EncoderConfig) -> list[AdapterSpec]:
    return [a.model_copy(update={"merged": True}) for a in config.adapters]


def _add_llara_tokens(
    causal: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, llara: LlaraSettings, seed: int
) -> list[int]:
    """Add the placeholder tokens, resize the embeddings (new rows initialised) and return the
    placeholder ids, looked up from the tokenizer."""
    first_new = len(tokenizer)
    add_placeholder_tokens(tokenizer, llara)
    model: Any = causal
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        _init_new_rows(model.get_input_embeddings().weight, first_new, seed)
    return [token_id(tokenizer, t) for t in llara.all_tokens()]


def save_output(
    stage_model: StageModel, out: Path, *, live_adapter: bool, pooler: nn.Module | None = None
) -> EncoderConfig:
    """Write the adapter, the copied stack (and carried pooler), a newly trained pooler and
    ``encoder_config.json``; the LLaRA base copy was written when the model was built."""
    config = stage_model.output_config
    for src, rel in stage_model.stack:
        dest = out / rel
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(src, dest)
    if isinstance(stage_model.peft_model, PeftModel):
        adapter_dir = out / ADAPTER_DIR
        if adapter_dir.exists():
            shutil.rmtree(adapter_dir)
        # The embeddings are in the base (copy); the adapter keeps only its own deltas.
        stage_model.peft_model.save_pretrained(str(adapter_dir), save_embedding_layers=False)
        if live_adapter:
            last = config.adapters[-1].model_copy(update={"merged": False})
            config = config.model_copy(update={"adapters": [*config.adapters[:-1], last]})
    if pooler is not None:
        from encoders.poolers import save_pooler

        save_pooler(pooler, out / POOLER_DIR)
    config.save(out)
    return config

"""Upcycle a dense Llama-family model into a Mixtral-architecture MoE: a demo model for MoEE.

No pretrained Mixture-of-Experts model is available offline, so the MoEE code path is exercised
on a model built from SmolLM2: every MLP is copied into ``num_experts`` identical experts and a
router with random weights (fixed seed) picks the top ``top_k`` per token. Because the experts
are identical and Mixtral renormalises the top-k weights to sum to one, the upcycled model's
hidden states equal the dense model's (up to float rounding): only the routing weights are new,
and they are those of an UNTRAINED random router. The folder name, the model config
(``ember_upcycled``) and a README written beside the weights say so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, MixtralConfig

from encoders.errors import EmberError

UNTRAINED_NOTE = (
    "UNTRAINED demo MoE: experts are identical copies of the dense MLP and the router is random. "
    "Its routing weights carry no learned signal; use it to exercise MoEE, not to judge it."
)
_SHARED_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "max_position_embeddings",
    "initializer_range",
    "rms_norm_eps",
    "rope_parameters",
    "attention_dropout",
    "tie_word_embeddings",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
)


def hf_config(model: torch.nn.Module) -> Any:
    return model.config


class UpcycleError(EmberError, ValueError):
    """The source model cannot be expressed as a Mixtral model."""


def mixtral_config(dense: Any, num_experts: int, top_k: int, seed: int) -> MixtralConfig:
    if getattr(dense, "model_type", None) not in {"llama", "mistral"}:
        raise UpcycleError(f"can upcycle llama/mistral models, not {dense.model_type!r}")
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(dense, flag, False):
            raise UpcycleError(f"{flag}=True has no Mixtral equivalent")
    if not 1 <= top_k <= num_experts:
        raise UpcycleError(f"top_k must be in 1..num_experts ({num_experts}), got {top_k}")
    fields = {f: getattr(dense, f) for f in _SHARED_FIELDS if getattr(dense, f, None) is not None}
    config = MixtralConfig(
        **fields,
        num_local_experts=num_experts,
        num_experts_per_tok=top_k,
        sliding_window=getattr(dense, "sliding_window", None),
        output_router_logits=False,
        router_jitter_noise=0.0,
    )
    config.ember_upcycled = {
        "from": str(getattr(dense, "_name_or_path", "") or dense.model_type),
        "num_experts": num_experts,
        "top_k": top_k,
        "router_seed": seed,
        "trained": False,
        "note": UNTRAINED_NOTE,
    }
    return config


def upcycle_model(
    dense: torch.nn.Module,
    *,
    num_experts: int = 4,
    top_k: int = 2,
    seed: int = 0,
    router_std: float | None = None,
) -> torch.nn.Module:
    """A MixtralForCausalLM with ``dense``'s weights, each MLP copied into every expert and a
    random router (normal, ``router_std`` or the config's initializer range, seeded)."""
    config = mixtral_config(hf_config(dense), num_experts, top_k, seed)
    with torch.device("meta"):
        moe = AutoModelForCausalLM.from_config(config)
    state = dense.state_dict()
    generator = torch.Generator().manual_seed(seed)
    std = config.initializer_range if router_std is None else router_std
    new: dict[str, torch.Tensor] = {}
    for name, param in moe.state_dict().items():
        if ".mlp." not in name:
            if name not in state:
                if name == "lm_head.weight" and config.tie_word_embeddings:
                    continue
                raise UpcycleError(f"the dense model has no weight {name!r}")
            new[name] = state[name].detach().clone().float()
            continue
        prefix = name.split(".mlp.")[0] + ".mlp."
        if name.endswith("mlp.gate.weight"):
            new[name] = torch.randn(param.shape, generator=generator) * std
        elif name.endswith("experts.gate_up_proj"):
            gate_up = torch.cat(
                [state[prefix + "gate_proj.weight"], state[prefix + "up_proj.weight"]], dim=0
            )
            new[name] = gate_up.float()[None].repeat(num_experts, 1, 1)
        elif name.endswith("experts.down_proj"):
            new[name] = state[prefix + "down_proj.weight"].float()[None].repeat(num_experts, 1, 1)
        else:
            raise UpcycleError(f"unexpected Mixtral MLP weight {name!r}")
    moe.load_state_dict(new, strict=False, assign=True)
    if config.tie_word_embeddings:
        moe.tie_weights()
    meta = [n for n, p in moe.named_parameters() if p.is_meta]
    if meta:
        raise UpcycleError(f"weights left unset by the upcycling: {meta[:5]}")
    return moe.eval()


def upcycle_folder(
    source: str | Path,
    target: str | Path,
    *,
    num_experts: int = 4,
    top_k: int = 2,
    seed: int = 0,
    router_std: float | None = None,
) -> Path:
    """Upcycle the HF folder ``source`` into a Mixtral HF folder ``target`` (+ tokenizer and a
    README marking it UNTRAINED)."""
    source, target = Path(source), Path(target)
    dense_config = AutoConfig.from_pretrained(source)
    mixtral_config(dense_config, num_experts, top_k, seed)  # fail before loading weights
    dense = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    moe = upcycle_model(
        dense, num_experts=num_experts, top_k=top_k, seed=seed, router_std=router_std
    )
    del dense
    target.mkdir(parents=True, exist_ok=True)
    moe.save_pretrained(target)  # type: ignore[operator]
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    info = hf_config(moe).ember_upcycled
    (target / "README.md").write_text(
        f"# {target.name}\n\n**{UNTRAINED_NOTE}**\n\n"
        f"Upcycled by `encoders.upcycle` from `{source}`:\n\n```json\n"
        f"{json.dumps(info, indent=2)}\n```\n"
    )
    return target

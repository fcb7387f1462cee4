"""Ordered LoRA adapter stacks through peft: each adapter is merged or kept live."""

from __future__ import annotations

from pathlib import Path

from peft import PeftModel
from torch import nn

from encoders.config import AdapterSpec
from encoders.errors import EmberError


class AdapterError(EmberError, RuntimeError):
    pass


def apply_adapters(model: nn.Module, adapters: list[AdapterSpec]) -> nn.Module:
    """Load adapters in order. Merged ones fold into the weights; at most the last may stay live
    (a live adapter below another adapter would be trained-on weights that no longer exist)."""
    for i, spec in enumerate(adapters):
        if not spec.merged and i != len(adapters) - 1:
            raise AdapterError(f"adapters[{i}]: only the last adapter of a stack may be live")
        if not (Path(spec.path) / "adapter_config.json").is_file():
            raise AdapterError(f"adapters[{i}]: {spec.path} has no adapter_config.json")
        peft_model = PeftModel.from_pretrained(model, spec.path)
        model = peft_model.merge_and_unload() if spec.merged else peft_model
    model.eval()
    return model

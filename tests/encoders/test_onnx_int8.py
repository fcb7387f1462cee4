"""dtype int8 through ONNX Runtime: exported once per encoder into the model cache, vectors close
to fp32 for bidirectional and causal decoders, chosen by ``int8_backend`` (auto: where
onnxruntime is installed and the encoder has an ONNX path), recorded with the build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from encoders import Encoder, EncoderConfig, onnx_int8
from encoders.moee import MoeeEncoder
from encoders.testing import tiny_model_folder
from tests.encoders.test_dtype import DOCS, INSTRUCTION, QUERIES, cosines


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_folder(tmp_path_factory.mktemp("tiny") / "llama", "llama")


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("EMBER_DTYPE", raising=False)
    monkeypatch.delenv(onnx_int8.INT8_BACKEND_ENV, raising=False)
    return tmp_path / "cache"


def load(folder: Path, dtype: str, **config: object) -> Encoder:
    return Encoder.from_config(
        EncoderConfig(base_model=str(folder), pooling="mean", **config),  # type: ignore[arg-type]
        dtype=dtype,
    )


@pytest.mark.parametrize("attention", ["bidirectional", "causal"])
def test_onnx_int8_vectors_agree_with_fp32(folder: Path, attention: str) -> None:
    fp32 = load(folder, "float32", attention=attention)
    int8 = load(folder, "int8", attention=attention, int8_backend="onnxruntime")
    assert int8.onnx is not None and (int8.dtype, int8.int8_backend) == ("int8", "onnxruntime")
    assert int8.fingerprint == fp32.fingerprint  # how vectors are computed, not what they are
    info = int8.build_info()
    assert (info["dtype"], info["int8_backend"]) == ("int8", "onnxruntime")
    docs = cosines(int8.encode_documents(DOCS), fp32.encode_documents(DOCS))
    queries = cosines(
        int8.encode_queries(QUERIES, INSTRUCTION), fp32.encode_queries(QUERIES, INSTRUCTION)
    )
    # full-range int8 weights saturated ONNX Runtime's u8 x s8 kernels here: 0.93 bidirectional
    # (reduce_range fixes it); 0.9999 measured with it
    assert docs.min() >= 0.999 and queries.min() >= 0.999
    alone = np.stack([int8.encode_documents([d])[0] for d in DOCS])
    assert cosines(alone, int8.encode_documents(DOCS)).min() >= 0.99  # activations per batch


def test_the_export_is_made_once_per_encoder(
    folder: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exports: list[Path] = []
    real = onnx_int8.export_int8

    def counted(encoder: Encoder, into: Path) -> Path:
        exports.append(into)
        return real(encoder, into)

    monkeypatch.setattr(onnx_int8, "export_int8", counted)
    first = load(folder, "int8", int8_backend="onnxruntime")
    again = load(folder, "int8", int8_backend="onnxruntime")
    assert len(exports) == 1
    assert first.onnx is not None and again.onnx is not None
    assert first.onnx.path == again.onnx.path and first.onnx.path.is_relative_to(cache / "onnx")
    # only the finished int8 model is left: no fp32 graph, no partial folder
    assert [p.name for p in (cache / "onnx").rglob("*") if p.is_file()] == ["model-int8.onnx"]
    np.testing.assert_allclose(
        first.encode_documents(DOCS), again.encode_documents(DOCS), atol=1e-6
    )


def test_auto_is_onnxruntime_where_it_can_run_and_torch_elsewhere(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = EncoderConfig(base_model=str(folder))
    assert onnx_int8.resolve_int8_backend("auto", Encoder, plain) == "onnxruntime"
    # MoEE's vectors are routing weights from every layer; a trainable pooler reads torch's output
    moee = plain.model_copy(update={"kind": "moee"})
    assert onnx_int8.resolve_int8_backend("auto", MoeeEncoder, moee) == "torch"
    pooled = plain.model_copy(update={"pooler": "some/pooler"})
    assert onnx_int8.resolve_int8_backend("auto", Encoder, pooled) == "torch"
    with pytest.raises(ValueError, match="int8_backend onnxruntime: a moee encoder runs its own"):
        onnx_int8.resolve_int8_backend("onnxruntime", MoeeEncoder, moee)
    monkeypatch.setattr(onnx_int8, "onnxruntime_installed", lambda: False)
    assert onnx_int8.resolve_int8_backend("auto", Encoder, plain) == "torch"
    with pytest.raises(ValueError, match="onnxruntime is not installed"):
        onnx_int8.resolve_int8_backend("onnxruntime", Encoder, plain)
    encoder = load(folder, "int8")  # auto, without onnxruntime: torch's dynamic int8
    assert (encoder.int8_backend, encoder.onnx) == ("torch", None)


def test_the_environment_overrides_the_config_and_a_bad_value_names_it(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = EncoderConfig(base_model=str(folder))
    monkeypatch.setenv(onnx_int8.INT8_BACKEND_ENV, "torch")
    assert onnx_int8.resolve_int8_backend("onnxruntime", Encoder, plain) == "torch"
    monkeypatch.setenv(onnx_int8.INT8_BACKEND_ENV, "tensorrt")
    with pytest.raises(ValueError, match="EMBER_INT8_BACKEND='tensorrt'"):
        onnx_int8.resolve_int8_backend("auto", Encoder, plain)
    with pytest.raises(ValueError, match="int8_backend"):
        EncoderConfig(base_model=str(folder), int8_backend="tensorrt")  # type: ignore[arg-type]
    # not part of the vector contract
    assert plain.model_copy(update={"int8_backend": "torch"}).fingerprint() == plain.fingerprint()

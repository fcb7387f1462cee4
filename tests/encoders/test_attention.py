"""The attention switch, proved per supported family on tiny random models: in bidirectional
mode changing the last token changes the first token's vector; in causal mode it cannot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from encoders import Encoder, EncoderConfig
from encoders.attention import UnsupportedArchitectureError, padding_mask_4d, set_bidirectional
from encoders.testing import FAMILIES, tiny_model_folder

A = "the quick brown fox jumps over the lazy dog"
B = "the quick brown fox jumps over the lazy cat"


@pytest.fixture(scope="module")
def family_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {family: tiny_model_folder(root / family, family) for family in FAMILIES}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_last_token_reaches_first_token_only_when_bidirectional(
    family: str, family_folders: dict[str, Path]
) -> None:
    def first_vectors(attention: str) -> np.ndarray:
        cfg = EncoderConfig(
            base_model=str(family_folders[family]),
            attention=attention,  # type: ignore[arg-type]
            pooling="first_token",
            normalize=False,
        )
        return Encoder.from_config(cfg).encode([A, B])

    causal = first_vectors("causal")
    bidir = first_vectors("bidirectional")
    assert np.abs(causal[0] - causal[1]).max() < 1e-5, "causal first token saw the future"
    assert np.abs(bidir[0] - bidir[1]).max() > 1e-3, "bidirectional first token is blind"


def test_switch_flips_every_attention_module(family_folders: dict[str, Path]) -> None:
    enc = Encoder.from_config(EncoderConfig(base_model=str(family_folders["llama"])))
    flags = [m.is_causal for m in enc.model.modules() if hasattr(m, "is_causal")]
    assert flags and not any(flags)
    assert set_bidirectional(enc.model, False) == len(flags)
    assert all(m.is_causal for m in enc.model.modules() if hasattr(m, "is_causal"))


def test_switch_refuses_models_without_attention_flag() -> None:
    with pytest.raises(UnsupportedArchitectureError):
        set_bidirectional(torch.nn.Linear(2, 2))


def test_padding_mask_hides_only_padding_keys() -> None:
    mask = padding_mask_4d(torch.tensor([[1, 1, 0], [0, 1, 1]]), torch.float32)
    assert mask.shape == (2, 1, 3, 3)
    blocked = mask < -1e30
    # every query row blocks exactly the padded keys, so no row is fully masked
    assert blocked[0, 0].tolist() == [[False, False, True]] * 3
    assert blocked[1, 0].tolist() == [[True, False, False]] * 3

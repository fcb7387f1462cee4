"""`ember export` on the real bundled SmolLM2-135M (slow: each export writes ~540 MB of fp32
weights). The untrained causal preset round-trips through sentence-transformers 6.2; the shipped
default (bidirectional) is refused there and exported as a merged HF folder that Ember loads back
to its own vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from encoders import Encoder, load_encoder, resolve_config
from encoders.export import ExportError, export_encoder

pytestmark = pytest.mark.slow

TEXTS = [
    "Vitamin D deficiency is associated with an increased risk of infection in adults.",
    "0-dimensional biomaterials show inductive properties.",
    "ALDH1 expression is associated with poorer prognosis for breast cancer primary tumors.",
    "A short one.",
]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))


@pytest.fixture(autouse=True)
def _fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBER_DTYPE", "float32")  # the comparison is against fp32 weights


def test_causal_smollm2_round_trips_through_sentence_transformers(tmp_path: Path) -> None:
    export_encoder(resolve_config("smollm2"), tmp_path / "st", instruction=None)
    st = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    ember = load_encoder("smollm2")
    docs = ember.encode_documents(TEXTS)
    assert cosines(np.asarray(st.encode_document(TEXTS, batch_size=2)), docs).min() >= 0.9999
    assert cosines(np.asarray(st.encode_query(TEXTS, batch_size=2)), docs).min() >= 0.9999


def test_the_default_is_refused_for_sentence_transformers_and_reloads_from_hf(
    tmp_path: Path,
) -> None:
    config = resolve_config("smollm2-ember")
    with pytest.raises(ExportError, match="bidirectional"):
        export_encoder(config, tmp_path / "st")
    export_encoder(config, tmp_path / "hf", "hf")
    back = Encoder.load(tmp_path / "hf")
    want = load_encoder("smollm2-ember")
    instruction = "Given a scientific claim, retrieve documents that support or refute the claim:"
    assert cosines(back.encode_documents(TEXTS), want.encode_documents(TEXTS)).min() >= 0.9999
    assert (
        cosines(back.encode_queries(TEXTS, instruction), want.encode_queries(TEXTS, instruction))
        .min() >= 0.9999
    )  # fmt: skip

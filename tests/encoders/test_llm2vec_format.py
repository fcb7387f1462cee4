"""LLM2Vec checkpoints laid out as llm2vec publishes them (base / MNTP adapter / supervised
adapter + llm2vec_config.json) load through resolve_config as the adapter stack they are.

The adapters here are random LoRAs saved by peft in Ember's venv, in llm2vec's layout; the
vectors are compared with the same stack written as an explicit encoder_config (the layout
reading is what is tested here, Ember's adapter maths has its own tests)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model

from encoders import AdapterSpec, Encoder, EncoderConfig
from encoders.llm2vec_format import LLM2VecCheckpointError
from encoders.registry import resolve_config
from encoders.testing import tiny_model_folder

TEXTS = ["Vitamin D deficiency is associated with infection.", "a", "proteins, cells and genes"]
HUB_NAME = "org/tiny-base"


def _lora(base: Path, out: Path, seed: int, named_base: str) -> Path:
    model = Encoder.from_config(EncoderConfig(base_model=str(base))).model
    torch.manual_seed(seed)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(model, config).save_pretrained(out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(
        json.dumps({**cfg, "base_model_name_or_path": named_base})
    )
    return out


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/{base, mntp, supervised}: MNTP carries the base's config.json (as published), the
    supervised adapter llm2vec_config.json; both name the base by a hub id, as llm2vec writes."""
    root = tmp_path_factory.mktemp("ckpt") / "LLM2Vec-tiny"
    base = tiny_model_folder(root / "base", "llama")
    mntp = _lora(base, root / "mntp", 1, HUB_NAME)
    shutil.copy(base / "config.json", mntp / "config.json")
    sup = _lora(base, root / "supervised", 2, HUB_NAME)
    (sup / "llm2vec_config.json").write_text(
        json.dumps({"pooling_mode": "weighted_mean", "max_length": 128, "doc_max_length": 64,
                    "skip_instruction": True})
    )  # fmt: skip
    return root


def _vectors(cfg: EncoderConfig) -> np.ndarray:
    return Encoder.from_config(cfg).encode(TEXTS, "Retrieve passages")


def test_a_checkpoint_root_loads_base_mntp_and_supervised_in_order(root: Path) -> None:
    cfg = resolve_config(str(root))
    assert cfg.base_model == str((root / "base").resolve())
    assert [Path(a.path).name for a in cfg.adapters] == ["mntp", "supervised"]
    assert (cfg.attention, cfg.pooling, cfg.max_length, cfg.query_max_length) == (
        "bidirectional", "weighted_mean", 64, 128,
    )  # fmt: skip
    explicit = EncoderConfig(
        base_model=str(root / "base"),
        pooling="weighted_mean",
        adapters=[AdapterSpec(path=str(root / "mntp")), AdapterSpec(path=str(root / "supervised"))],
    )
    np.testing.assert_allclose(_vectors(cfg), _vectors(explicit), atol=1e-6)
    loaded = Encoder.load(root).encode(TEXTS, "Retrieve passages")  # the same through Encoder.load
    np.testing.assert_allclose(loaded, _vectors(explicit), atol=1e-6)
    mntp_only = EncoderConfig(
        base_model=str(root / "base"), pooling="weighted_mean",
        adapters=[AdapterSpec(path=str(root / "mntp"))],
    )  # fmt: skip
    assert np.abs(_vectors(cfg) - _vectors(mntp_only)).max() > 1e-3, "the top adapter was dropped"


def test_an_mntp_folder_alone_follows_its_named_base(root: Path, tmp_path: Path) -> None:
    mntp = shutil.copytree(root / "mntp", tmp_path / "mntp")
    meta = json.loads((mntp / "adapter_config.json").read_text())
    meta["base_model_name_or_path"] = str(root / "base")
    (mntp / "adapter_config.json").write_text(json.dumps(meta))
    cfg = resolve_config(str(mntp))
    assert cfg.pooling == "mean" and [Path(a.path) for a in cfg.adapters] == [mntp.resolve()]
    assert cfg.base_model == str((root / "base").resolve())


def test_a_hub_named_base_is_found_in_the_local_hf_cache_only(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mntp = shutil.copytree(root / "mntp", tmp_path / "alone" / "mntp")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(LLM2VecCheckpointError, match="never downloads"):
        resolve_config(str(mntp))
    snapshot = tmp_path / "hub" / "models--org--tiny-base" / "snapshots" / "0123abc"
    shutil.copytree(root / "base", snapshot)
    assert resolve_config(str(mntp)).base_model == str(snapshot)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"pooling_mode": "bos_token"}, "pooling_mode 'bos_token'"),
        ({"skip_instruction": False}, "skip_instruction false"),
    ],
)
def test_settings_ember_cannot_reproduce_are_refused(
    root: Path, tmp_path: Path, settings: dict[str, object], message: str
) -> None:
    copy = shutil.copytree(root, tmp_path / "ckpt")
    (copy / "supervised" / "llm2vec_config.json").write_text(json.dumps(settings))
    with pytest.raises(LLM2VecCheckpointError, match=message):
        resolve_config(str(copy))


@pytest.mark.parametrize("pooling", ["mean", "eos_token"])
def test_chat_wrapped_models_get_llm2vecs_chat_turn(
    root: Path, tmp_path: Path, pooling: str
) -> None:
    """llm2vec wraps instruction and text of named instruct models in a chat turn; the turn's
    start is never pooled, its end is (llm2vec pools the last tokens, up to the end)."""
    copy = shutil.copytree(root, tmp_path / "ckpt")
    cfg = json.loads((copy / "mntp" / "config.json").read_text())
    cfg["_name_or_path"] = "mistralai/Mistral-7B-Instruct-v0.2"
    (copy / "mntp" / "config.json").write_text(json.dumps(cfg))
    (copy / "supervised" / "llm2vec_config.json").write_text(json.dumps({"pooling_mode": pooling}))
    config = resolve_config(str(copy))
    eos = " </s>" if pooling == "eos_token" else ""
    assert (config.text_prefix, config.text_suffix) == ("[INST] ", " [/INST]" + eos)
    enc = Encoder.from_config(config)
    full, start = enc.compose("proteins", "Retrieve passages")
    assert full == "[INST] Retrieve passages proteins [/INST]" + eos
    assert full[start:] == "proteins [/INST]" + eos
    assert enc.compose("proteins", None) == ("[INST] proteins [/INST]" + eos, len("[INST] "))
    plain = EncoderConfig(base_model=str(root / "base"))
    assert plain.fingerprint() == plain.model_copy(update={"text_prefix": ""}).fingerprint()
    assert plain.fingerprint() != plain.model_copy(update={"text_prefix": "[INST] "}).fingerprint()


def test_an_ambiguous_root_is_refused(root: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(root, tmp_path / "ckpt")
    shutil.copy(copy / "mntp" / "config.json", copy / "supervised" / "config.json")
    (copy / "supervised" / "llm2vec_config.json").unlink()
    with pytest.raises(LLM2VecCheckpointError, match="cannot tell the MNTP adapter"):
        resolve_config(str(copy))


def test_eos_token_pooling_is_the_last_token_after_llm2vecs_suffix(
    root: Path, tmp_path: Path
) -> None:
    copy = shutil.copytree(root, tmp_path / "ckpt")
    (copy / "supervised" / "llm2vec_config.json").write_text(
        json.dumps({"pooling_mode": "eos_token"})
    )
    cfg = resolve_config(str(copy))
    assert (cfg.pooling, cfg.text_suffix) == ("last_token", " </s>")  # a Llama config
    enc = Encoder.from_config(cfg)
    item = enc.tokenize(["proteins"], None, 64)[0]
    assert item.ids[-1] == enc.tokenizer.eos_token_id
    plain = EncoderConfig(base_model=str(root / "base"))
    assert plain.fingerprint() == plain.model_copy(update={"text_suffix": ""}).fingerprint()
    assert plain.fingerprint() != plain.model_copy(update={"text_suffix": " </s>"}).fingerprint()


def test_a_qwen2_checkpoint_loads_causal_as_llm2vec_runs_it(tmp_path: Path) -> None:
    """llm2vec 0.2.3's Qwen2BiModel keeps Qwen2Model's causal mask (the slow test and
    bench/_ref/qwen2_attention.py show its vectors equal the causal model's), so its Qwen2
    adapters were trained, and are served, causal."""
    base = tiny_model_folder(tmp_path / "base", "qwen2")
    mntp = _lora(base, tmp_path / "mntp", 1, str(base))
    assert resolve_config(str(mntp)).attention == "causal"

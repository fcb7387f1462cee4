"""Encoder behaviour on tiny random models: padding, batching, instructions, save/reload, LoRA."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from encoders import AdapterSpec, Encoder, EncoderConfig
from encoders.adapters import AdapterError
from encoders.loading import ModelNotFoundError
from encoders.testing import tiny_model_folder
from tests.encoders.helpers import VARIED_TEXTS, assert_batch_invariant

TEXTS = VARIED_TEXTS * 3  # 18 texts of very different lengths


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_folder(tmp_path_factory.mktemp("tiny") / "llama", "llama")


def make(folder: Path, **kwargs: object) -> Encoder:
    return Encoder.from_config(EncoderConfig(base_model=str(folder), **kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
@pytest.mark.parametrize("pooling", ["mean", "weighted_mean", "last_token", "first_token"])
def test_left_and_right_padding_give_the_same_vectors(
    folder: Path, attention: str, pooling: str
) -> None:
    right = make(folder, attention=attention, pooling=pooling, padding_side="right")
    left = make(folder, attention=attention, pooling=pooling, padding_side="left")
    np.testing.assert_allclose(right.encode(TEXTS), left.encode(TEXTS), atol=1e-5)


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_vectors_do_not_depend_on_batch_size_or_neighbours(folder: Path, attention: str) -> None:
    one = make(folder, attention=attention, max_batch_size=1)
    sixteen = make(folder, attention=attention, max_batch_size=16)
    tight = make(folder, attention=attention, token_budget=40)  # budget forces ragged batches
    assert_batch_invariant(one, [sixteen, tight], TEXTS, seed=7)


def test_batches_respect_token_budget_and_cover_every_item(folder: Path) -> None:
    enc = make(folder, token_budget=64, max_batch_size=4)
    items = enc.tokenize(TEXTS, None, 512)
    batches = list(enc.batches(items))
    assert sorted(i for b in batches for i in b) == list(range(len(TEXTS)))
    for batch in batches:
        longest = max(len(items[i].ids) for i in batch)
        assert len(batch) <= 4
        assert len(batch) == 1 or len(batch) * longest <= 64


def test_an_unset_token_budget_is_small_on_the_cpu_and_large_on_a_gpu(folder: Path) -> None:
    """No GPU here: only the config's choice for a cuda device is checked, not a cuda forward."""
    from encoders.config import CPU_TOKEN_BUDGET, GPU_TOKEN_BUDGET

    cfg = EncoderConfig(base_model=str(folder))
    assert cfg.token_budget is None
    assert (cfg.budget_for("cpu"), cfg.budget_for("cuda")) == (CPU_TOKEN_BUDGET, GPU_TOKEN_BUDGET)
    assert CPU_TOKEN_BUDGET < GPU_TOKEN_BUDGET
    assert EncoderConfig(base_model=str(folder), token_budget=99).budget_for("cuda") == 99
    enc = make(folder, max_batch_size=1000)
    items = enc.tokenize(["word " * 300] * 40, None, 512)
    batches = list(enc.batches(items))
    longest = max(len(it.ids) for it in items)
    assert len(batches) > 1
    assert all(len(b) * longest <= CPU_TOKEN_BUDGET for b in batches)
    assert len(batches[0]) == CPU_TOKEN_BUDGET // longest


def test_instruction_tokens_are_located_by_offsets(folder: Path) -> None:
    enc = make(folder)
    text = "proteins, cells and genes"
    [item] = enc.tokenize([text], "Retrieve relevant passages:", 512)
    assert enc.tokenizer.decode(item.ids[item.text_start :]).strip() == text
    assert item.text_start > 0
    [plain] = enc.tokenize([text], None, 512)
    assert plain.text_start == 0


def test_mean_pooling_leaves_the_instruction_out(folder: Path) -> None:
    enc = make(folder, attention="bidirectional", pooling="mean", normalize=False)
    instruction = "Retrieve relevant passages:"
    [item] = enc.tokenize(["proteins, cells and genes"], instruction, 512)
    with torch.inference_mode():
        hidden = enc.hidden_states(enc.collate([item])).last_hidden_state[0]  # type: ignore[attr-defined]
    text_only = hidden[item.text_start :].mean(0).numpy()
    everything = hidden.mean(0).numpy()
    got = enc.encode_queries(["proteins, cells and genes"], instruction)[0]
    np.testing.assert_allclose(got, text_only, atol=1e-5)
    assert np.abs(got - everything).max() > 1e-3


def test_queries_get_the_instruction_and_documents_do_not(folder: Path) -> None:
    enc = make(folder, attention="causal")
    docs = enc.encode_documents(["proteins, cells and genes"])
    plain = enc.encode(["proteins, cells and genes"])
    queries = enc.encode_queries(["proteins, cells and genes"], "Retrieve relevant passages:")
    np.testing.assert_array_equal(docs, plain)
    assert np.abs(queries - docs).max() > 1e-3  # causal: the text tokens saw the instruction


def test_vectors_are_unit_float32(folder: Path) -> None:
    out = make(folder).encode(TEXTS)
    assert out.dtype == np.float32 and out.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_saved_config_reloads_to_identical_vectors(folder: Path, tmp_path: Path) -> None:
    enc = make(folder, attention="bidirectional", pooling="weighted_mean", max_length=64)
    enc.save(tmp_path / "saved")
    again = Encoder.load(tmp_path / "saved")
    assert again.config == enc.config
    np.testing.assert_array_equal(again.encode(TEXTS), enc.encode(TEXTS))


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    target = tmp_path / "enc"
    local = tiny_model_folder(target / "base", "llama")
    (target / "encoder_config.json").write_text(EncoderConfig(base_model="base").model_dump_json())
    loaded = Encoder.load(target)
    assert loaded.config.base_model == str(local.resolve())


def test_fingerprint_tracks_what_shapes_document_vectors(folder: Path) -> None:
    base = EncoderConfig(base_model=str(folder))
    assert base.fingerprint() == EncoderConfig(base_model=str(folder)).fingerprint()
    assert base.fingerprint() != base.model_copy(update={"pooling": "last_token"}).fingerprint()
    # query-only settings do not force a reindex
    assert base.fingerprint() == base.model_copy(update={"query_max_length": 32}).fingerprint()


def _save_random_lora(folder: Path, out: Path) -> Path:
    model = make(folder).model
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    torch.manual_seed(3)
    get_peft_model(model, config).save_pretrained(out)
    return out


def test_lora_adapter_merged_or_live_gives_the_same_vectors(folder: Path, tmp_path: Path) -> None:
    adapter = _save_random_lora(folder, tmp_path / "lora")
    base = make(folder).encode(TEXTS)
    merged = make(folder, adapters=[AdapterSpec(path=str(adapter), merged=True)]).encode(TEXTS)
    live = make(folder, adapters=[AdapterSpec(path=str(adapter), merged=False)]).encode(TEXTS)
    assert np.abs(merged - base).max() > 1e-3, "the adapter changed nothing"
    np.testing.assert_allclose(merged, live, atol=1e-5)


def test_a_retrained_adapter_of_the_same_shape_changes_the_fingerprint(
    folder: Path, tmp_path: Path
) -> None:
    """Same rank, same file sizes, other weights: another encoder (the retraining loop compares
    a candidate with the serving encoder through the eval cache, keyed by fingerprint). Where
    the folder lives is not part of it."""
    first = _save_random_lora(folder, tmp_path / "a")
    second = _save_random_lora(folder, tmp_path / "b")
    weights = "adapter_model.safetensors"
    with safe_open(second / weights, "pt") as stream:
        metadata = stream.metadata()
    tensors = load_file(second / weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, second / weights, metadata=metadata)
    assert (first / weights).stat().st_size == (second / weights).stat().st_size

    def config(adapter: Path) -> EncoderConfig:
        return EncoderConfig(base_model=str(folder), adapters=[AdapterSpec(path=str(adapter))])

    assert config(first).fingerprint() != config(second).fingerprint()
    copy = shutil.copytree(first, tmp_path / "elsewhere")
    assert config(first).fingerprint() == config(copy).fingerprint()


def test_adapter_stack_applies_in_order(folder: Path, tmp_path: Path) -> None:
    first = _save_random_lora(folder, tmp_path / "a")
    stacked = make(
        folder,
        adapters=[AdapterSpec(path=str(first)), AdapterSpec(path=str(first), merged=False)],
    )
    single = make(folder, adapters=[AdapterSpec(path=str(first))])
    assert np.abs(stacked.encode(TEXTS) - single.encode(TEXTS)).max() > 1e-4
    with pytest.raises(AdapterError, match="only the last adapter"):
        make(
            folder,
            adapters=[AdapterSpec(path=str(first), merged=False), AdapterSpec(path=str(first))],
        )
    with pytest.raises(AdapterError, match=r"no adapter_config\.json"):
        make(folder, adapters=[AdapterSpec(path=str(tmp_path / "missing"))])


def test_missing_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="never downloads"):
        make(tmp_path / "nope")


def test_single_string_is_rejected(folder: Path) -> None:
    with pytest.raises(TypeError):
        make(folder).encode("not a list")  # type: ignore[arg-type]


def test_echo_pools_only_the_second_copy(folder: Path) -> None:
    enc = make(folder, attention="causal", echo=True)
    text = "proteins, cells and genes"
    [item] = enc.tokenize([text], None, 512)
    assert enc.tokenizer.decode(item.ids[item.text_start :]).strip() == text
    assert enc.tokenizer.decode(item.ids).count(text) == 2


def test_echo_gives_causal_early_tokens_the_future(folder: Path) -> None:
    """The Echo point: with causal attention, the first text token sees the rest of the text
    (from the first copy) only in echo mode."""
    plain = make(folder, attention="causal", pooling="mean", normalize=False)
    echo = make(folder, attention="causal", pooling="mean", normalize=False, echo=True)

    def first_text_token(enc: Encoder, text: str) -> np.ndarray:
        [item] = enc.tokenize([text], None, 512)
        with torch.inference_mode():
            out = enc.hidden_states(enc.collate([item]))
        return out.last_hidden_state[0, item.text_start].numpy()  # type: ignore[attr-defined]

    a, b = "cells divide quickly", "cells divide slowly"
    assert np.abs(first_text_token(plain, a) - first_text_token(plain, b)).max() < 1e-5
    assert np.abs(first_text_token(echo, a) - first_text_token(echo, b)).max() > 1e-3


def test_config_rejects_inconsistent_pooling_and_echo_template() -> None:
    with pytest.raises(ValueError, match="need a pooler folder"):
        EncoderConfig(pooling="latent_attention")
    with pytest.raises(ValueError, match="exactly twice"):
        EncoderConfig(echo=True, echo_template="{text} only once")


def test_decoder_bos_is_never_pooled(tmp_path: Path) -> None:
    """Llama/Mistral-style tokenizers prepend BOS; like llm2vec, mean pooling leaves it out with
    and without an instruction (found by the llm2vec parity bench)."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    folder = tiny_model_folder(tmp_path / "bos", "llama")
    tok = AutoTokenizer.from_pretrained(folder)
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.bos_token_id)]
    )
    tok.save_pretrained(folder)
    enc = make(folder, attention="bidirectional", pooling="mean", normalize=False)
    [item] = enc.tokenize(["proteins, cells and genes"], None, 512)
    assert item.ids[0] == tok.bos_token_id and item.text_start == 1
    with torch.inference_mode():
        hidden = enc.hidden_states(enc.collate([item])).last_hidden_state[0]  # type: ignore[attr-defined]
    np.testing.assert_allclose(
        enc.encode(["proteins, cells and genes"])[0], hidden[1:].mean(0).numpy(), atol=1e-5
    )

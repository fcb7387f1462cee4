"""MoEE on tiny random Mixtral, OLMoE and Qwen2-MoE models: routing weights, statistics fitted
once, batch invariance, similarity modes and the upcycled demo model."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from encoders import Encoder, EncoderConfig
from encoders.config import MoeeConfig
from encoders.moee import MoeeEncoder, MoeeError, combine, find_routers, sum_similarity
from encoders.testing import tiny_model_folder
from encoders.upcycle import UpcycleError, upcycle_folder
from tests.encoders.helpers import VARIED_TEXTS

FAMILIES = ["mixtral", "olmoe", "qwen2_moe"]
LAYERS, EXPERTS, HIDDEN = 2, 4, 32  # encoders.testing's tiny MoE configs
TEXTS = VARIED_TEXTS * 2
SAMPLE = [
    "Given a scientific claim, retrieve documents that support or refute the claim.",
    "Retrieve relevant passages that answer the query about proteins, cells and genes.",
    "The quick brown fox jumps over the lazy dog.",
    "0 1 2 3 4 5 6 7 8 9",
    "Search engines rank documents.",
    "cells divide quickly",
]


@pytest.fixture(scope="module", params=FAMILIES)
def folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_folder(tmp_path_factory.mktemp("moe") / request.param, request.param)


def make(folder: Path, moee: MoeeConfig | None = None, **kwargs: object) -> MoeeEncoder:
    config = EncoderConfig(base_model=str(folder), kind="moee", moee=moee, **kwargs)  # type: ignore[arg-type]
    encoder = Encoder.from_config(config)
    assert isinstance(encoder, MoeeEncoder)
    return encoder


def fitted(folder: Path, **kwargs: object) -> MoeeEncoder:
    encoder = make(folder, **kwargs)
    encoder.fit_stats(SAMPLE)
    return encoder


def test_routing_weights_have_one_block_per_layer_that_sums_to_one(folder: Path) -> None:
    enc = make(folder)
    hs, rw = enc.encode_raw(TEXTS)
    assert hs.shape == (len(TEXTS), HIDDEN)
    assert rw.shape == (len(TEXTS), LAYERS * EXPERTS)
    blocks = rw.reshape(len(TEXTS), LAYERS, EXPERTS)
    np.testing.assert_allclose(blocks.sum(axis=2), 1.0, atol=1e-5)
    np.testing.assert_allclose(rw.sum(axis=1), LAYERS, atol=1e-5)
    assert (rw > 0).all()
    assert enc.vector_dims == {"hs": HIDDEN, "rw": LAYERS * EXPERTS}


def test_routing_weights_are_the_mean_softmax_of_the_router_logits(folder: Path) -> None:
    """Independent recomputation: run the base model, softmax each layer's logits per token and
    average over the text tokens only (instruction excluded)."""
    enc = make(folder, attention="causal")
    text, instruction = "proteins, cells and genes", "Retrieve relevant passages:"
    _, rw = enc.encode_raw([text], instruction)
    [item] = enc.tokenize([text], instruction, 512)
    ids = torch.tensor([item.ids])
    with torch.inference_mode():
        out = enc.model(input_ids=ids, output_router_logits=True)
    expected = [
        torch.softmax(logits.float(), dim=-1)[item.text_start :].mean(0)
        for logits in out.router_logits
    ]
    np.testing.assert_allclose(rw[0], torch.cat(expected).numpy(), atol=1e-6)


def test_gate_hooks_give_the_same_routing_weights_as_the_model_output(folder: Path) -> None:
    by_output = make(folder, moee=MoeeConfig(router_source="output", standardize=False))
    by_hook = make(folder, moee=MoeeConfig(router_source="hook", standardize=False))
    assert len(find_routers(by_hook.model, EXPERTS)) == LAYERS
    _, rw_out = by_output.encode_raw(TEXTS)
    _, rw_hook = by_hook.encode_raw(TEXTS)
    np.testing.assert_allclose(rw_hook, rw_out, atol=1e-6)


def test_padding_is_masked_out_of_the_routing_weights(folder: Path) -> None:
    right = make(folder, padding_side="right")
    left = make(folder, padding_side="left")
    _, alone = right.encode_raw(["a"])
    _, padded_right = right.encode_raw(TEXTS)  # "a" padded next to long texts
    _, padded_left = left.encode_raw(TEXTS)
    np.testing.assert_allclose(padded_right[1], alone[0], atol=1e-5)
    np.testing.assert_allclose(padded_left[1], alone[0], atol=1e-5)


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_vectors_do_not_depend_on_the_batch(folder: Path, attention: str) -> None:
    one = fitted(folder, attention=attention, max_batch_size=1)
    stats = one.settings
    many = make(folder, moee=stats, attention=attention, max_batch_size=16)
    tight = make(folder, moee=stats, attention=attention, token_budget=40)
    reference = one.encode_named(TEXTS)
    for other in (many, tight):
        got = other.encode_named(TEXTS)
        for name in ("hs", "rw"):
            assert np.abs(got[name] - reference[name]).max() < 1e-5
    order = list(range(len(TEXTS)))
    random.Random(3).shuffle(order)
    shuffled = many.encode_named([TEXTS[i] for i in order])
    assert np.abs(shuffled["rw"] - reference["rw"][order]).max() < 1e-5
    # a document alone equals the same document inside a batch: no per-batch statistics
    alone = many.encode_named([TEXTS[2]])
    assert np.abs(alone["rw"][0] - reference["rw"][2]).max() < 1e-5
    assert np.abs(alone["hs"][0] - reference["hs"][2]).max() < 1e-5


def test_statistics_are_fitted_once_saved_and_reloaded_identically(
    folder: Path, tmp_path: Path
) -> None:
    enc = make(folder)
    with pytest.raises(MoeeError, match="fit_stats"):
        enc.encode(TEXTS)
    before = enc.fingerprint
    stats = enc.fit_stats(SAMPLE)
    assert stats.samples == len(SAMPLE)
    assert len(stats.rw_mean) == LAYERS * EXPERTS and len(stats.hs_std) == HIDDEN
    raw_hs, raw_rw = enc.encode_raw(SAMPLE)
    np.testing.assert_allclose(stats.rw_mean, raw_rw.mean(0), atol=1e-6)
    np.testing.assert_allclose(stats.hs_std, raw_hs.std(0), rtol=1e-4)
    assert enc.fingerprint != before  # refitted statistics force a new index build

    first = enc.encode_named(TEXTS)
    enc.save(tmp_path / "enc")
    again = Encoder.load(tmp_path / "enc")
    assert isinstance(again, MoeeEncoder)
    assert again.config == enc.config and again.fingerprint == enc.fingerprint
    reloaded = again.encode_named(TEXTS)
    for name in ("hs", "rw"):
        np.testing.assert_array_equal(reloaded[name], first[name])
    # encoding does not refit: vectors of the sample stay the same after encoding other texts
    np.testing.assert_array_equal(again.encode_named(TEXTS)["rw"], first["rw"])


def test_standardisation_spreads_the_routing_cosines(folder: Path) -> None:
    raw = make(folder, moee=MoeeConfig(standardize=False)).encode_named(SAMPLE)["rw"]
    std = fitted(folder).encode_named(SAMPLE)["rw"]
    off_diagonal = ~np.eye(len(SAMPLE), dtype=bool)
    assert (raw @ raw.T)[off_diagonal].min() > 0.9  # all-positive weights near 1/experts
    assert (std @ std.T)[off_diagonal].min() < 0.5


def test_combined_vector_ranks_exactly_like_the_sum_similarity(folder: Path) -> None:
    w = 0.7
    enc = fitted(folder, moee=MoeeConfig(rw_weight=w))
    query = enc.encode_named(["retrieve proteins"], "Retrieve passages:")
    docs = enc.encode_named(TEXTS)
    brute = sum_similarity(query, docs, w)[0]
    single = enc.encode_queries(["retrieve proteins"], "Retrieve passages:") @ enc.encode(TEXTS).T
    np.testing.assert_allclose(single[0] * (1 + w), brute, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(enc.encode(TEXTS), axis=1), 1.0, atol=1e-5)


def test_concat_mode_has_one_named_vector(folder: Path) -> None:
    enc = fitted(folder, moee=MoeeConfig(similarity="concat", rw_weight=2.0))
    assert enc.vector_dims == {"dense": HIDDEN + LAYERS * EXPERTS}
    named = enc.encode_named(TEXTS)
    assert list(named) == ["dense"]
    np.testing.assert_array_equal(named["dense"], enc.encode(TEXTS))
    parts = enc.encode_parts(TEXTS)
    np.testing.assert_allclose(named["dense"], combine(parts["hs"], parts["rw"], 2.0), atol=1e-7)


def test_dense_models_are_rejected(tmp_path: Path) -> None:
    dense = tiny_model_folder(tmp_path / "llama", "llama")
    with pytest.raises(MoeeError, match="not a Mixture-of-Experts"):
        make(dense)


def test_moee_settings_need_the_moee_kind(folder: Path) -> None:
    with pytest.raises(ValueError, match="kind='moee'"):
        EncoderConfig(base_model=str(folder), moee=MoeeConfig())


# ---- the upcycled demo model ------------------------------------------------------------------
@pytest.fixture(scope="module")
def upcycled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("upcycle")
    dense = tiny_model_folder(root / "llama", "llama")
    return dense, upcycle_folder(dense, root / "moe-UNTRAINED", num_experts=4, top_k=2, seed=5)


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_upcycled_model_has_the_dense_models_hidden_states(
    upcycled: tuple[Path, Path], attention: str
) -> None:
    dense, moe = upcycled
    kwargs = {"attention": attention, "normalize": False, "pooling": "mean"}
    a = Encoder.from_config(EncoderConfig(base_model=str(dense), **kwargs))  # type: ignore[arg-type]
    b = Encoder.from_config(EncoderConfig(base_model=str(moe), **kwargs))  # type: ignore[arg-type]
    assert b.model.config.model_type == "mixtral"
    items = a.tokenize(TEXTS, None, 512)
    with torch.inference_mode():
        ha = a.hidden_states(a.collate(items), all_layers=True)
        hb = b.hidden_states(b.collate(items), all_layers=True)
    for x, y in zip(ha.hidden_states, hb.hidden_states, strict=True):  # type: ignore[attr-defined]
        torch.testing.assert_close(y, x, atol=1e-5, rtol=1e-5)


def test_upcycled_model_is_labelled_untrained_and_routes_with_a_seeded_router(
    upcycled: tuple[Path, Path], tmp_path: Path
) -> None:
    dense, moe = upcycled
    assert "UNTRAINED" in (moe / "README.md").read_text()
    enc = make(moe)
    info = enc.model.config.ember_upcycled
    assert info["trained"] is False and info["num_experts"] == 4 and info["top_k"] == 2
    _, rw = enc.encode_raw(TEXTS)
    assert rw.shape == (len(TEXTS), 2 * 4)
    again = upcycle_folder(dense, tmp_path / "again", num_experts=4, top_k=2, seed=5)
    other = upcycle_folder(dense, tmp_path / "other", num_experts=4, top_k=2, seed=6)
    np.testing.assert_array_equal(make(again).encode_raw(TEXTS)[1], rw)
    assert np.abs(make(other).encode_raw(TEXTS)[1] - rw).max() > 1e-3


def test_upcycling_rejects_what_mixtral_cannot_express(tmp_path: Path) -> None:
    biased = tiny_model_folder(tmp_path / "biased", "llama", mlp_bias=True)
    with pytest.raises(UpcycleError, match="mlp_bias"):
        upcycle_folder(biased, tmp_path / "out")
    qwen = tiny_model_folder(tmp_path / "qwen", "qwen2")
    with pytest.raises(UpcycleError, match="llama/mistral"):
        upcycle_folder(qwen, tmp_path / "out2")
    plain = tiny_model_folder(tmp_path / "plain", "llama")
    with pytest.raises(UpcycleError, match="top_k"):
        upcycle_folder(plain, tmp_path / "out3", num_experts=2, top_k=3)


def test_sum_weight_is_query_time_only_but_concat_weight_changes_the_index() -> None:
    """In ``sum`` mode hs and rw are stored apart and the weight only scores queries, so
    changing it keeps the fingerprint (no reindex); in ``concat`` mode it is baked into the
    stored vector, so it must change the fingerprint."""

    def fingerprint(similarity: str, weight: float) -> str:
        moee = MoeeConfig(similarity=similarity, rw_weight=weight)  # type: ignore[arg-type]
        return EncoderConfig(base_model="m", kind="moee", moee=moee).fingerprint()

    assert fingerprint("sum", 1.0) == fingerprint("sum", 3.0)
    assert fingerprint("concat", 1.0) != fingerprint("concat", 3.0)
    assert fingerprint("sum", 1.0) != fingerprint("concat", 1.0)

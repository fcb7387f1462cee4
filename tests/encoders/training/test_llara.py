"""LLaRA: placeholder tokens, the branch mask, shared positions, BOW loss, pre-training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel

from encoders import Encoder, EncoderConfig
from encoders.llara import (
    EBAE,
    EBAR,
    PASSAGE,
    LlaraEncoder,
    LlaraError,
    LlaraLayout,
    LlaraSettings,
    add_placeholder_tokens,
    branch_mask_4d,
    llara_layout_tensors,
)
from encoders.loading import load_tokenizer
from encoders.training.llara import bag_of_tokens
from encoders.training.losses import IGNORE, bow_loss, bow_targets
from tests.encoders.training.conftest import SENTENCES, Train

SETTINGS = LlaraSettings(num_placeholders=3)


@pytest.fixture(scope="module")
def llara_folder(train: Train, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("llara") / "enc"
    train("llara", out, "pairs.jsonl", num_placeholders=3, batch_size=4, max_length=64, lr=1e-3)
    return out


def test_placeholder_ids_are_added_and_looked_up(tiny_model: Path) -> None:
    tok = load_tokenizer(tiny_model)
    size = len(tok)
    assert add_placeholder_tokens(tok, SETTINGS) == 6
    assert add_placeholder_tokens(tok, SETTINGS) == 0  # idempotent
    layout = LlaraLayout(tok, SETTINGS)
    expected = [tok.convert_tokens_to_ids(t) for t in SETTINGS.ebae_tokens()]
    assert layout.ebae_placeholders == expected
    assert all(i >= size for i in layout.ebae_placeholders + layout.ebar_placeholders)
    assert layout.ebae_ids[-3:] == layout.ebae_placeholders
    assert layout.ebar_ids[-3:] == layout.ebar_placeholders
    # A special token stays one token inside text.
    ids = tok(f"abc{SETTINGS.ebae_tokens()[0]}", add_special_tokens=False)["input_ids"]
    assert ids[-1] == layout.ebae_placeholders[0]


def test_layout_without_placeholder_tokens_is_an_error(tiny_model: Path) -> None:
    with pytest.raises(LlaraError, match="ember train llara"):
        LlaraLayout(load_tokenizer(tiny_model), SETTINGS)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_layout_segments_and_shared_positions(padding_side: str) -> None:
    # Row 0: passage of 3, EBAE 2, EBAR 2; row 1: passage of 1 (+ 2 pads).
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    if padding_side == "left":
        mask[1] = torch.tensor([0, 0, 1, 1, 1, 1, 1])
    t = llara_layout_tensors(mask, ebae_len=2, ebar_len=2, k=1)
    assert t["segment_ids"][0].tolist() == [PASSAGE] * 3 + [EBAE] * 2 + [EBAR] * 2
    assert t["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 3, 4]  # EBAR restarts at 3
    row = t["segment_ids"][1][mask[1].bool()].tolist()
    assert row == [PASSAGE] + [EBAE] * 2 + [EBAR] * 2
    assert t["position_ids"][1][mask[1].bool()].tolist() == [0, 1, 2, 1, 2]
    assert t["ebae_mask"][0].tolist() == [0, 0, 0, 0, 1, 0, 0]
    assert t["ebar_mask"][0].tolist() == [0, 0, 0, 0, 0, 0, 1]


def test_branch_mask_blocks_ebar_from_ebae() -> None:
    seg = torch.tensor([[PASSAGE, PASSAGE, EBAE, EBAE, EBAR, EBAR, -1]])
    for causal in (True, False):
        allowed = branch_mask_4d(seg, causal, torch.float32)[0, 0] == 0
        assert not allowed[4:6, 2:4].any()  # EBAR rows never see EBAE keys
        assert not allowed[2:4, 4:6].any()  # and EBAE never sees EBAR
        assert allowed[4:6, 0:2].all() and allowed[2:4, 0:2].all()  # both see the passage
        assert not allowed[:6, 6].any()  # nobody attends to padding
        assert bool(allowed[1, 0]) and bool(allowed[0, 1]) != causal
        assert not allowed[0:2, 2:6].any()  # the passage never sees a prompt


def test_llara_encoder_branches_read_as_if_alone(llara_folder: Path) -> None:
    """With causal attention each branch's states equal a plain causal run of passage + that
    prompt: EBAR cannot see EBAE, and its positions continue the passage."""
    encoder = Encoder.load(llara_folder)
    assert isinstance(encoder, LlaraEncoder)
    layout = encoder.layout
    [item] = encoder.tokenize(["Vitamin D deficiency is associated with infection."], None, 64)
    batch = encoder.collate([item])
    with torch.inference_mode():
        hidden = encoder.hidden_states(batch).last_hidden_state[0]
        passage = item.ids[: -layout.prompt_length]
        plain = encoder.model
        alone_ebae = plain(input_ids=torch.tensor([passage + layout.ebae_ids])).last_hidden_state[0]
        alone_ebar = plain(input_ids=torch.tensor([passage + layout.ebar_ids])).last_hidden_state[0]
    n, e = len(passage), len(layout.ebae_ids)
    assert torch.allclose(hidden[n : n + e], alone_ebae[n:], atol=1e-5)
    assert torch.allclose(hidden[n + e :], alone_ebar[n:], atol=1e-5)
    # Changing the EBAE prompt changes EBAE states but not EBAR states.
    other = list(item.ids)
    other[n] = (other[n] + 1) % layout.ebae_placeholders[0]
    with torch.inference_mode():
        changed = encoder.hidden_states(encoder.collate([type(item)(other, 0)])).last_hidden_state[
            0
        ]
    assert (changed[n : n + e] - hidden[n : n + e]).abs().max() > 1e-4
    assert torch.allclose(changed[n + e :], hidden[n + e :], atol=1e-6)


def test_llara_prompts_end_every_text_within_max_length(llara_folder: Path) -> None:
    """The passage is truncated to leave room for the EBAE / EBAR prompts, which end each item;
    a max_length with no room for a passage token is refused."""
    encoder = Encoder.load(llara_folder)
    assert isinstance(encoder, LlaraEncoder)
    suffix = encoder.layout.suffix_ids
    limit = len(suffix) + 3
    for item in encoder.tokenize([SENTENCES[0] * 4, "a"], None, limit):
        assert item.ids[-len(suffix) :] == suffix
        assert len(suffix) < len(item.ids) <= limit
    with pytest.raises(LlaraError, match="leaves no room for the passage"):
        encoder.tokenize(["a"], None, len(suffix))


def test_llara_output_folder(llara_folder: Path) -> None:
    config = EncoderConfig.load(llara_folder)
    assert config.kind == "llara" and config.attention == "causal"
    assert Path(config.base_model) == (llara_folder / "base").resolve()
    tok = load_tokenizer(llara_folder / "base")
    assert all(t in tok.get_vocab() for t in SETTINGS.all_tokens())
    assert LlaraSettings.load(llara_folder / "base").num_placeholders == 3
    model = AutoModel.from_pretrained(llara_folder / "base")
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    log = [json.loads(x) for x in (llara_folder / "train_log.jsonl").read_text().splitlines()]
    assert all(r["ebae"] > 0 and r["ebar"] > 0 for r in log)


def test_llara_vectors_reload_exactly_and_placeholders_were_trained(
    train: Train, tmp_path: Path
) -> None:
    out = tmp_path / "llara"
    trainer = train("llara", out, "pairs.jsonl", num_placeholders=2, batch_size=4, lr=1e-2)
    reference = trainer.encoder.encode(SENTENCES)
    reloaded = Encoder.load(out)
    np.testing.assert_allclose(reloaded.encode(SENTENCES), reference, atol=1e-5)
    ids = reloaded.layout.ebae_placeholders
    trained = reloaded.model.get_input_embeddings().weight[ids]
    base = AutoModel.from_pretrained(out / "base").get_input_embeddings().weight[ids]
    assert (trained - base).abs().max() > 1e-4  # the trainable-token deltas were merged
    queries = reloaded.encode_queries(SENTENCES[:2], "Retrieve:")
    assert queries.shape == (2, 32)


def test_bow_loss_is_the_mean_negative_log_probability_of_the_bag() -> None:
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
    targets = bow_targets([[0, 2], [3]], torch.device("cpu"))
    assert targets.tolist() == [[0, 2], [3, IGNORE]]
    logp = torch.log_softmax(logits, dim=-1)
    expected = -((logp[0, 0] + logp[0, 2]) / 2 + logp[1, 3]) / 2
    assert torch.allclose(bow_loss(logits, targets), expected)


def test_bags_leave_out_special_tokens_stopwords_and_duplicates(tiny_model: Path) -> None:
    tok = load_tokenizer(tiny_model)
    [bag] = bag_of_tokens(tok, ["the fox and the dog"], {tok.eos_token_id}, True)
    words = [tok.decode([t]).strip() for t in bag]
    assert "the" not in words and "and" not in words
    assert len(bag) == len(set(bag)) and bag
    [full] = bag_of_tokens(tok, ["the fox and the dog"], set(), False)
    assert len(full) > len(bag)


def test_every_query_path_pools_the_query_branch(llara_folder: Path) -> None:
    """encode_queries, encode(query=True) (the eval cache) and encode_queries_named (fused
    search) all pool ``query_pool``; documents pool ``document_pool``."""
    encoder = Encoder.load(llara_folder)
    assert isinstance(encoder, LlaraEncoder)
    encoder.settings = encoder.settings.model_copy(
        update={"query_pool": "ebar", "document_pool": "ebae"}
    )
    texts = ["Vitamin D deficiency is associated with infection.", "cells"]
    length = encoder.config.query_max_length
    queries = encoder.encode_queries(texts, "Retrieve:")
    np.testing.assert_allclose(
        encoder.encode(texts, "Retrieve:", max_length=length, query=True), queries, atol=1e-6
    )
    np.testing.assert_allclose(
        encoder.encode_queries_named(texts, "Retrieve:")["dense"], queries, atol=1e-6
    )
    as_documents = encoder.encode(texts, "Retrieve:", max_length=length)
    assert np.abs(as_documents - queries).max() > 1e-3  # the other branch

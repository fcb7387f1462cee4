"""MNTP: the shifted label trick, masking, mask-token lookup, and a short run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from encoders import AdapterSpec, Encoder, EncoderConfig
from encoders.adapters import apply_adapters
from encoders.loading import load_tokenizer
from encoders.training import make_trainer
from encoders.training.base import TrainingError
from encoders.training.losses import IGNORE, mask_tokens, mntp_loss, mntp_loss_from_hidden
from encoders.training.mntp import resolve_mask_token, special_token_ids
from tests.encoders.training.conftest import SENTENCES, base_params


def test_masked_token_at_i_is_read_from_logits_at_i_minus_1() -> None:
    # One row, 4 positions, vocabulary 5; token 3 at position 2 is masked.
    labels = torch.tensor([[IGNORE, IGNORE, 3, IGNORE]])
    confident = torch.full((1, 4, 5), -10.0)
    confident[0, 1, 3] = 10.0  # position 1 predicts token 3 -> right under the shift
    confident[0, 2, 0] = 10.0  # position 2 itself predicts token 0
    assert mntp_loss(confident, labels).item() < 1e-3
    unshifted = torch.full((1, 4, 5), -10.0)
    unshifted[0, 2, 3] = 10.0  # a model predicting at the masked position itself
    unshifted[0, 1, 0] = 10.0  # ... while position 1 predicts another token
    assert mntp_loss(unshifted, labels).item() > 10.0


def test_loss_from_hidden_equals_full_logits_loss() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(2, 6, 8)
    head = nn.Linear(8, 11, bias=False)
    labels = torch.full((2, 6), IGNORE)
    labels[0, 2], labels[0, 5], labels[1, 1] = 4, 7, 9
    expected = mntp_loss(head(hidden), labels)
    assert torch.allclose(mntp_loss_from_hidden(hidden, labels, head), expected, atol=1e-6)


def test_masking_never_touches_padding_special_or_first_tokens() -> None:
    special = {0, 1, 2}
    ids = torch.tensor([[1, 10, 11, 12, 13, 14, 2, 0, 0], [1, 20, 21, 22, 23, 24, 25, 26, 2]])
    mask = (ids != 0).long()
    mask[0, 7:] = 0
    gen = torch.Generator().manual_seed(0)
    masked, labels = mask_tokens(ids, mask, special, 99, 0.95, 100, gen)
    selected = labels != IGNORE
    real = mask.bool()
    is_special = (ids == 0) | (ids == 1) | (ids == 2)
    first = torch.zeros_like(real)
    first[:, 0] = True
    assert not (selected & (~real | is_special | first)).any()
    assert torch.equal(masked[~selected], ids[~selected])  # nothing else changes
    assert torch.equal(labels[selected], ids[selected])
    assert (masked[selected] == 99).any()
    # Candidates are the 5 + 7 ordinary tokens; at p=0.95 nearly all are selected.
    assert selected.sum() >= 9


def test_masking_with_left_padding_skips_the_first_real_token() -> None:
    ids = torch.tensor([[0, 0, 10, 11, 12]])
    mask = torch.tensor([[0, 0, 1, 1, 1]])
    for seed in range(20):
        _, labels = mask_tokens(ids, mask, {0}, 99, 0.9, 50, torch.Generator().manual_seed(seed))
        assert labels[0, :3].eq(IGNORE).all()


def test_masking_selects_about_mask_prob_and_replaces_80_percent() -> None:
    ids = torch.randint(10, 1000, (64, 128))
    mask = torch.ones_like(ids)
    masked, labels = mask_tokens(ids, mask, {0}, 5, 0.2, 1000, torch.Generator().manual_seed(1))
    selected = labels != IGNORE
    rate = selected.float().mean().item()
    assert 0.18 < rate < 0.22
    replaced = (masked[selected] == 5).float().mean().item()
    assert 0.75 < replaced < 0.85


def test_mask_token_is_looked_up_never_hard_coded(tiny_model: Path) -> None:
    tok = load_tokenizer(tiny_model)
    assert tok.mask_token is None
    token, mask_id = resolve_mask_token(tok, None)
    assert token == "_"
    assert mask_id == tok("_", add_special_tokens=False)["input_ids"][0]
    token, mask_id = resolve_mask_token(tok, "<unk>")
    assert mask_id == tok.convert_tokens_to_ids("<unk>")
    with pytest.raises(TrainingError, match="not a single token"):
        resolve_mask_token(tok, "certainly-not-one-token")
    assert {tok.pad_token_id, tok.bos_token_id, tok.eos_token_id} <= special_token_ids(tok)


def test_mntp_run_trains_an_adapter_that_loads_on_the_encoder_model(
    bi_encoder: Path, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "mntp"
    trainer = make_trainer(
        "mntp",
        base_params(bi_encoder, out, data_dir / "texts.jsonl", max_length=24, lr=1e-3),
    )
    trainer.run()
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all(r["masked"] >= 1 and np.isfinite(r["loss"]) for r in log)
    config = EncoderConfig.load(out)
    assert config.attention == "bidirectional"
    assert [Path(a.path).name for a in config.adapters] == ["adapter"]
    # The saved adapter is against the base module tree: apply_adapters puts it on the
    # Encoder's model, and it changes the vectors.
    plain = Encoder.load(bi_encoder)
    before = plain.encode(SENTENCES)
    plain.model = apply_adapters(plain.model, [AdapterSpec(path=str(out / "adapter"))])
    after = plain.encode(SENTENCES)
    assert np.abs(after - before).max() > 1e-4
    np.testing.assert_allclose(Encoder.load(out).encode(SENTENCES), after, atol=1e-6)

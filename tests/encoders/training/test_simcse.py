"""Unsupervised SimCSE: dropout makes two views, the loss drops, config comes from the input."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from encoders import EncoderConfig
from encoders.training import make_trainer
from encoders.training.losses import contrastive_loss
from encoders.training.model import set_dropout
from tests.encoders.training.conftest import SENTENCES, Train, base_params


def test_two_views_differ_with_dropout_and_match_without(
    bi_encoder: Path, data_dir: Path, tmp_path: Path
) -> None:
    trainer = make_trainer(
        "simcse",
        base_params(
            bi_encoder, tmp_path / "o", data_dir / "texts.jsonl", dropout=0.3, batch_size=8
        ),
    )
    trainer._prepare_output()
    trainer.setup()
    items = trainer.encoder.tokenize(SENTENCES, None, 32)
    trainer.train_mode(True)
    first = trainer.encoder.embed_batch(items)
    second = trainer.encoder.embed_batch(items)
    assert (first - second).abs().max() > 1e-4
    set_dropout(trainer.stage.peft_model, 0.0)
    third = trainer.encoder.embed_batch(items)
    fourth = trainer.encoder.embed_batch(items)
    assert torch.allclose(third, fourth, atol=1e-6)


def test_in_batch_contrastive_loss_matches_its_definition() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    scores = torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T
    scores = scores / 0.05
    expected = -(scores.diag() - scores.logsumexp(dim=1)).mean()
    assert torch.allclose(contrastive_loss(a, b, 0.05), expected, atol=1e-5)


def test_simcse_loss_drops(train: Train, tmp_path: Path) -> None:
    out = tmp_path / "simcse"
    train(
        "simcse",
        out,
        "texts.jsonl",
        max_steps=30,
        save_steps=30,
        batch_size=8,
        lr=3e-3,
        warmup_ratio=0.0,
        dropout=0.1,
        max_examples=8,
    )
    losses = [
        json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()
    ]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    config = EncoderConfig.load(out)
    assert (config.attention, config.pooling) == ("bidirectional", "mean")

"""GradCache gives the full-batch gradients, and replays dropout masks exactly."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from encoders.encoder import Tokenized
from encoders.training import make_trainer
from encoders.training.gradcache import cached_backward, full_batch_backward
from encoders.training.losses import contrastive_loss
from encoders.training.model import set_dropout
from encoders.training.supervised import SupervisedTrainer
from tests.encoders.training.conftest import base_params


def _trainer(bi_encoder: Path, data_dir: Path, out: Path, **extra: object) -> SupervisedTrainer:
    params = base_params(
        bi_encoder,
        out,
        data_dir / "supervised.jsonl",
        batch_size=8,
        hard_negatives=1,
        lora_dropout=0.0,
        **extra,
    )
    trainer = make_trainer("supervised", params)
    assert isinstance(trainer, SupervisedTrainer)
    trainer._prepare_output()
    trainer.setup()
    with torch.no_grad():  # non-zero LoRA B so every adapter weight gets a gradient
        for name, param in trainer.stage.peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    return trainer


def _grads(
    trainer: SupervisedTrainer, chunk_size: int | None
) -> tuple[float, dict[str, torch.Tensor]]:
    queries, docs, exclude = trainer.batch_inputs(0)
    assert len(docs) == 16  # 8 positives + 8 hard negatives

    def loss_fn(reps: list[torch.Tensor]) -> torch.Tensor:
        return contrastive_loss(reps[0], reps[1], 0.05, exclude)

    for _, param in trainer.trainable():
        param.grad = None
    if chunk_size is None:
        loss = full_batch_backward(trainer.encoder.embed_batch, [queries, docs], loss_fn)
    else:
        loss = cached_backward(trainer.encoder.embed_batch, [queries, docs], loss_fn, chunk_size)
    grads = {n: p.grad.clone() for n, p in trainer.trainable() if p.grad is not None}
    return loss, grads


@pytest.mark.parametrize("chunk_size", [1, 3])
def test_gradcache_gradients_equal_full_batch_gradients(
    bi_encoder: Path, data_dir: Path, tmp_path: Path, chunk_size: int
) -> None:
    trainer = _trainer(bi_encoder, data_dir, tmp_path / "gc")
    trainer.train_mode(True)
    full_loss, full = _grads(trainer, None)
    cached_loss, cached = _grads(trainer, chunk_size)
    assert abs(full_loss - cached_loss) < 1e-5
    assert full.keys() == cached.keys() and len(full) == len(trainer.trainable())
    scale = max(g.abs().max().item() for g in full.values())
    assert scale > 0
    for name, grad in full.items():
        assert torch.allclose(cached[name], grad, atol=1e-5 * max(1.0, scale)), name


def test_gradcache_replays_the_dropout_masks(
    bi_encoder: Path, data_dir: Path, tmp_path: Path
) -> None:
    trainer = _trainer(bi_encoder, data_dir, tmp_path / "gc-drop")
    set_dropout(trainer.stage.peft_model, 0.3)
    trainer.train_mode(True)
    seen: list[torch.Tensor] = []

    def embed(items: Sequence[Tokenized]) -> torch.Tensor:
        rep = trainer.encoder.embed_batch(items)
        seen.append(rep.detach().clone())
        return rep

    queries, docs, exclude = trainer.batch_inputs(0)
    cached_backward(
        embed, [queries, docs], lambda r: contrastive_loss(r[0], r[1], 0.05, exclude), 4
    )
    chunks = len(seen) // 2  # first pass without graph, second with
    assert chunks == 2 + 4
    for first, second in zip(seen[:chunks], seen[chunks:], strict=True):
        assert torch.equal(first, second)
    # Dropout is on: the same texts embed differently outside the replay.
    again = trainer.encoder.embed_batch(queries[:4])
    assert (again - seen[0]).abs().max() > 1e-4

"""Supervised contrastive: hard negatives, false-negative masking, instructions, poolers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from encoders import Encoder, EncoderConfig
from encoders.training import Trainer, make_trainer
from encoders.training.data import DataError, read_beir_train
from encoders.training.losses import contrastive_loss
from encoders.training.supervised import SupervisedTrainer
from tests.encoders.training.conftest import SENTENCES, Train, base_params


def test_loss_with_hard_negatives_matches_its_definition() -> None:
    torch.manual_seed(0)
    q, d = torch.randn(3, 8), torch.randn(6, 8)  # 3 positives then 3 hard negatives
    s = F.normalize(q, dim=-1) @ F.normalize(d, dim=-1).T / 0.05
    expected = -(s[[0, 1, 2], [0, 1, 2]] - s.logsumexp(dim=1)).mean()
    assert torch.allclose(contrastive_loss(q, d, 0.05), expected, atol=1e-5)
    # A hard negative that equals the positive makes the loss larger than without it.
    easy = contrastive_loss(q, d[:3], 0.05)
    hard = contrastive_loss(q, torch.cat([d[:3], d[:1] + 1e-3]), 0.05)
    assert hard > easy


def test_false_negatives_are_excluded() -> None:
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # doc 2 is also relevant to q0
    exclude = torch.tensor([[False, False, True], [False, False, False]])
    with_fn = contrastive_loss(q, d, 0.05)
    without = contrastive_loss(q, d, 0.05, exclude)
    assert without < with_fn
    s = q @ d.T / 0.05
    row0 = -(s[0, 0] - s[0, :2].logsumexp(0))  # doc 2 left out of query 0's softmax
    row1 = -(s[1, 1] - s[1].logsumexp(0))
    assert torch.allclose(without, (row0 + row1) / 2, atol=1e-5)


def _prepared(bi_encoder: Path, data: Path, out: Path, **extra: object) -> SupervisedTrainer:
    trainer = make_trainer("supervised", base_params(bi_encoder, out, data, **extra))
    assert isinstance(trainer, SupervisedTrainer)
    trainer._prepare_output()
    trainer.setup()
    return trainer


def test_batches_hold_instructed_queries_positives_and_hard_negatives(
    bi_encoder: Path, data_dir: Path, tmp_path: Path
) -> None:
    rows = [json.loads(x) for x in (data_dir / "supervised.jsonl").read_text().splitlines()]
    for row in rows:
        row["instruction"] = "Retrieve relevant passages:"
    data = tmp_path / "instructed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    trainer = _prepared(bi_encoder, data, tmp_path / "o", batch_size=4, hard_negatives=1)
    queries, docs, exclude = trainer.batch_inputs(0)
    assert len(queries) == 4 and len(docs) == 8 and exclude.shape == (4, 8)
    tok = trainer.encoder.tokenizer
    for item in queries:
        assert item.text_start > 0  # pooling skips the instruction
        assert "Retrieve relevant passages" in tok.decode(item.ids[: item.text_start])
    positives = {tok.decode(d.ids) for d in docs[:4]}
    assert positives <= {
        tok.decode(trainer.encoder.tokenize([s], None, 256)[0].ids) for s in SENTENCES
    }
    assert trainer.batch_inputs(0)[1] == docs  # a step's batch is a function of the step


def _beir(tmp_path: Path) -> Path:
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    corpus = [
        {"_id": f"d{i}", "title": f"Doc {i}", "text": text} for i, text in enumerate(SENTENCES)
    ]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    queries = [
        {"_id": "q1", "text": "vitamin D infection risk"},
        {"_id": "q2", "text": "cosine similarity of embeddings"},
        {"_id": "q3", "text": "test query"},
    ]
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (folder / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td3\t1\nq2\td2\t1\n"
    )
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq3\td0\t1\n")
    return folder


def test_beir_train_split_with_bm25_negatives_and_no_test_queries(tmp_path: Path) -> None:
    folder = _beir(tmp_path)
    source = read_beir_train(folder, None, "bm25", 5, 0)
    assert {ex.query for ex in source.examples} == {
        "vitamin D infection risk",
        "cosine similarity of embeddings",
    }
    assert len(source.examples) == 3  # one example per relevant pair
    for ex in source.examples:
        assert ex.negatives and not set(ex.negative_keys) & ex.positive_keys
        assert ex.positive.startswith("Doc ")  # BEIR convention: title + " " + text
    q1 = [ex for ex in source.examples if ex.query.startswith("vitamin")]
    assert all(ex.positive_keys == {"d1", "d3"} for ex in q1)
    with pytest.raises(DataError, match="test qrels"):
        read_beir_train(folder, None, "bm25", 5, 0, split="test")


def test_in_batch_copies_of_another_positive_are_masked(tmp_path: Path, bi_encoder: Path) -> None:
    folder = _beir(tmp_path)
    trainer = _prepared(
        bi_encoder, folder, tmp_path / "o", batch_size=3, hard_negatives=0, mining="random"
    )
    _, _, exclude = trainer.batch_inputs(0)
    assert exclude.sum() == 2  # q1's two positives mask each other


def train_pooler(train: Train, out: Path, pooler: str, **extra: object) -> Trainer:
    """A supervised run on the hard-negative rows (batch 4, lr 1e-2) with a ``pooler`` head."""
    return train(
        "supervised", out, "supervised.jsonl", batch_size=4, pooler=pooler, lr=1e-2, **extra
    )


@pytest.mark.parametrize("kind", ["latent_attention", "multi_layer"])
def test_pooler_is_trained_saved_and_reloaded(train: Train, tmp_path: Path, kind: str) -> None:
    out = tmp_path / kind
    trainer = train_pooler(train, out, kind, chunk_size=2)
    config = EncoderConfig.load(out)
    assert config.pooling == kind and Path(config.pooler or "") == (out / "pooler").resolve()
    names = [n for n, _ in trainer.trainable()]
    assert any(n.startswith("pooler.") for n in names) and any("lora_" in n for n in names)
    reference = trainer.encoder.encode(SENTENCES)
    np.testing.assert_allclose(Encoder.load(out).encode(SENTENCES), reference, atol=1e-5)


def test_pooler_alone_with_a_frozen_model(train: Train, tmp_path: Path) -> None:
    out = tmp_path / "frozen"
    trainer = train_pooler(train, out, "latent_attention", freeze_model=True)
    assert all(n.startswith("pooler.") for n, _ in trainer.trainable())
    config = EncoderConfig.load(out)
    assert config.adapters == [] and not (out / "adapter").exists()
    np.testing.assert_allclose(
        Encoder.load(out).encode(SENTENCES), trainer.encoder.encode(SENTENCES), atol=1e-5
    )

"""Distillation from a teacher encoder in the supervised stage: the loss, the teacher's vectors
lined up with each batch's texts, and the parameter checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from encoders import Encoder
from encoders.training import TrainingError, make_trainer
from encoders.training.losses import distill_loss
from encoders.training.supervised import SupervisedTrainer
from tests.encoders.training.conftest import SENTENCES, base_params


def test_distill_loss_is_the_kl_of_the_two_in_batch_softmaxes() -> None:
    torch.manual_seed(0)
    q, d = torch.randn(3, 8), torch.randn(5, 8)
    teacher = torch.rand(3, 5) * 2 - 1
    student = F.normalize(q, dim=-1) @ F.normalize(d, dim=-1).T / 0.05
    p = F.softmax(teacher / 0.1, dim=-1)
    expected = (p * (p.log() - F.log_softmax(student, dim=-1))).sum(dim=1).mean()
    assert torch.allclose(distill_loss(q, d, teacher, 0.05, 0.1), expected, atol=1e-5)
    # The student's own cosines as the teacher's: nothing to learn.
    own = F.normalize(q, dim=-1) @ F.normalize(d, dim=-1).T
    assert distill_loss(q, d, own, 0.05, 0.05) < 1e-6
    assert distill_loss(q, d, teacher, 0.05, 0.05) > 0.01


def test_excluded_cells_leave_both_distributions() -> None:
    torch.manual_seed(1)
    q, d = torch.randn(2, 4), torch.randn(3, 4)
    teacher = torch.rand(2, 3)
    exclude = torch.tensor([[False, False, True], [False, False, False]])
    masked = distill_loss(q, d, teacher, 0.05, 0.05, exclude)
    row0 = distill_loss(q[:1], d[:2], teacher[:1, :2], 0.05, 0.05)
    row1 = distill_loss(q[1:], d, teacher[1:], 0.05, 0.05)
    assert torch.allclose(masked, (row0 + row1) / 2, atol=1e-5)


def _scored(tmp_path: Path) -> Path:
    file = tmp_path / "scored.jsonl"
    rows = [
        {"text1": a, "text2": b, "score": float(i % 5)}
        for i, (a, b) in enumerate(zip(SENTENCES, SENTENCES[1:] + SENTENCES[:1], strict=True))
    ]
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return file


def _with_teacher(
    bi_encoder: Path, data_dir: Path, out: Path, **extra: object
) -> dict[str, object]:
    """Supervised params whose teacher is the student's own input encoder."""
    return base_params(
        bi_encoder,
        out,
        data_dir / "supervised.jsonl",
        batch_size=4,
        hard_negatives=1,
        teacher=str(bi_encoder),
        **extra,
    )


def test_teacher_scores_line_up_with_each_batch(
    bi_encoder: Path, data_dir: Path, tmp_path: Path
) -> None:
    scored = [str(_scored(tmp_path))]
    params = _with_teacher(bi_encoder, data_dir, tmp_path / "out", scored_pairs=scored)
    trainer = make_trainer("supervised", params)
    assert isinstance(trainer, SupervisedTrainer)
    trainer._prepare_output()
    trainer.setup()
    teacher = Encoder.load(bi_encoder)
    seen = set()
    for step in range(trainer.batcher.per_epoch):
        source_index, rows, doc_texts, _ = trainer._batch_texts(step)
        source = trainer.sources[source_index]
        if hasattr(source, "pairs"):
            firsts = [source.pairs[i][0] for i in rows]
            docs = [source.pairs[int(k)][1] for k in doc_texts]
        else:
            firsts = [source.examples[i].query for i in rows]
            docs = doc_texts
        expected = teacher.encode(firsts, None, query=True) @ teacher.encode(docs, None).T
        got = trainer.teacher_scores(step)
        assert got.shape == (len(rows), len(doc_texts))
        assert torch.allclose(got, torch.from_numpy(expected), atol=1e-5)
        seen.add(type(source).__name__)
    assert seen == {"Source", "ScoredSource"}


def test_a_student_equal_to_its_teacher_starts_with_nothing_to_distil(
    bi_encoder: Path, data_dir: Path, tmp_path: Path
) -> None:
    """The new LoRA adapter starts at zero, so the student's first forward is the teacher's:
    the first step's distillation loss is ~0 only if the teacher's vectors belong to the
    batch's own texts, in order. Training then logs both parts and ends with a loadable
    encoder."""
    params = _with_teacher(
        bi_encoder,
        data_dir,
        tmp_path / "out",
        distill_weight=0.7,
        teacher_temperature=0.05,
        max_steps=2,
    )
    out = make_trainer("supervised", params).run()
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["distill"] < 1e-4 < log[0]["gold"]
    assert log[0]["loss"] == pytest.approx(0.3 * log[0]["gold"] + 0.7 * log[0]["distill"])
    assert Encoder.load(out).encode(["a test"]).shape[0] == 1


def test_distillation_settings_need_a_teacher(bi_encoder: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="distill_weight needs a teacher"):
        make_trainer(
            "supervised", base_params(bi_encoder, tmp_path / "o", tmp_path, distill_weight=0.3)
        )

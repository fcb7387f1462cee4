"""Supervised sources beyond labelled queries: corpus pairs (self-supervised), graded pairs
(CoSENT), and bf16 autocast for any stage."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from encoders.hardware import cpu_has_fast_bf16, has_fast_bf16
from encoders.instructions import TASKS
from encoders.training import make_trainer
from encoders.training.base import autocast_dtype
from encoders.training.data import DataError, read_corpus_pairs, read_scored_pairs
from encoders.training.losses import cosent_loss
from encoders.training.supervised import SupervisedTrainer
from tests.encoders.training.conftest import SENTENCES, base_params


def _corpus(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rows = [{"_id": "t1", "title": "Vitamin D and infection", "text": SENTENCES[1]}]
    rows.append({"_id": "n1", "text": "First sentence here. Second one follows. Third ends it."})
    rows.append({"_id": "n2", "text": "A single sentence without a title"})
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_corpus_pairs_titles_and_inverse_cloze(tmp_path: Path) -> None:
    source = read_corpus_pairs(_corpus(tmp_path / "scifact"), None, seed=0)
    assert source.instruction == TASKS["scifact"]  # the BEIR folder's task
    by_key = {ex.positive_key: ex for ex in source.examples}
    assert set(by_key) == {"t1", "n1"}  # one sentence and no title: no pair
    assert by_key["t1"].query == "Vitamin D and infection"
    assert by_key["t1"].positive == SENTENCES[1]  # the title is not in its own positive
    ict = by_key["n1"]
    assert ict.query.endswith(".") and ict.query not in ict.positive  # one sentence, taken out
    words = ["First", "sentence", "here.", "Second", "one", "follows.", "Third", "ends", "it."]
    assert sorted((ict.query + " " + ict.positive).split()) == sorted(words)
    assert read_corpus_pairs(tmp_path / "scifact", None, seed=0).examples[1].query == ict.query
    other = read_corpus_pairs(tmp_path / "scifact" / "corpus.jsonl", "Find it:", seed=0)
    assert other.instruction == "Find it:"


def test_corpus_without_any_pair_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "c.jsonl"
    file.write_text(json.dumps({"_id": "x", "text": "one sentence"}) + "\n")
    with pytest.raises(DataError, match="no \\(title, text\\)"):
        read_corpus_pairs(file, None, 0)


def test_scored_pairs_from_sts_csv_and_jsonl(tmp_path: Path) -> None:
    csv = tmp_path / "sts-train.csv"
    csv.write_text(
        "main\tMSRvid\t2012\t0001\t5.000\ta plane is taking off .\tan air plane is taking off .\n"
        "main\tMSRvid\t2012\t0004\t3.800\ta man plays a flute .\ta man plays a large flute .\n"
    )
    source = read_scored_pairs(csv, None)
    assert source.instruction == TASKS["sts"]
    assert source.pairs[0] == ("a plane is taking off .", "an air plane is taking off .", 5.0)
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text(
        "".join(
            json.dumps({"text1": a, "text2": b, "score": i}) + "\n"
            for i, (a, b) in enumerate(pairwise(SENTENCES[:3]))
        )
    )
    assert [p[2] for p in read_scored_pairs(jsonl, None).pairs] == [0, 1]
    (tmp_path / "sts-test.csv").write_text(csv.read_text())
    with pytest.raises(DataError, match="test split"):
        read_scored_pairs(tmp_path / "sts-test.csv", None)
    bad = tmp_path / "bad.csv"
    bad.write_text("a\tb\tc\n")
    with pytest.raises(DataError, match=r"bad\.csv:1"):
        read_scored_pairs(bad, None)


def test_cosent_loss_matches_its_definition_and_orders() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    gold = torch.tensor([3.0, 1.0, 2.0, 1.0])
    cos = F.cosine_similarity(a, b, dim=-1) * 20
    terms = [torch.tensor(0.0)]
    for i in range(4):
        for j in range(4):
            if gold[i] > gold[j]:
                terms.append(cos[j] - cos[i])
    expected = torch.logsumexp(torch.stack(terms), 0)
    assert torch.allclose(cosent_loss(a, b, gold), expected, atol=1e-5)
    # Pairs already in the gold order give a lower loss than the same pairs reversed.
    first = torch.eye(3)
    right = torch.stack([first[0], first[1] + first[0], first[0] * -1 + first[2]])
    ordered = cosent_loss(first, right, torch.tensor([3.0, 2.0, 1.0]))
    reversed_ = cosent_loss(first, right, torch.tensor([1.0, 2.0, 3.0]))
    assert ordered < reversed_


def test_supervised_run_mixes_labelled_corpus_and_scored_sources(
    bi_encoder: Path, data_dir: Path, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"_id": str(i), "title": s.split()[1], "text": s}) + "\n"
            for i, s in enumerate(SENTENCES)
        )
    )
    scored = tmp_path / "scored.jsonl"
    scored.write_text(
        "".join(
            json.dumps({"text1": a, "text2": b, "score": float(i % 3)}) + "\n"
            for i, (a, b) in enumerate(pairwise(SENTENCES))
        )
    )
    params = base_params(
        bi_encoder,
        tmp_path / "out",
        data_dir / "supervised.jsonl",
        batch_size=4,
        corpus_pairs=[str(corpus)],
        scored_pairs=[str(scored)],
        max_steps=5,
        save_steps=5,
        lr=1e-3,
    )
    trainer = make_trainer("supervised", params)
    assert isinstance(trainer, SupervisedTrainer)
    trainer._prepare_output()
    trainer.setup()
    kinds = [type(s).__name__ for s in trainer.sources]
    assert kinds == ["Source", "Source", "ScoredSource"]
    per_source = [trainer.batcher.batch(s)[0] for s in range(trainer.batcher.per_epoch)]
    assert sorted(set(per_source)) == [0, 1, 2]  # every source gets batches in an epoch
    scored_step = per_source.index(2)
    firsts, seconds, gold = trainer.batch_inputs(scored_step)
    tok = trainer.encoder.tokenizer
    assert all(item.text_start > 0 for item in [*firsts, *seconds])  # both sides instructed
    assert "semantically similar" in tok.decode(firsts[0].ids[: firsts[0].text_start])
    assert gold.shape == (4,)
    out = make_trainer("supervised", params).run()
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 5 and all(torch.isfinite(torch.tensor(r["loss"])) for r in log)


def test_autocast_choice_follows_the_hardware() -> None:
    cpu = torch.device("cpu")
    assert autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    assert autocast_dtype("auto", cpu) == (torch.bfloat16 if cpu_has_fast_bf16() else None)
    assert has_fast_bf16("cpu") == cpu_has_fast_bf16()


def test_bf16_run_trains_and_reloads(bi_encoder: Path, data_dir: Path, tmp_path: Path) -> None:
    """bf16 autocast end to end (on an AVX2-only CPU it is emulated: slow, still correct)."""
    out = tmp_path / "bf16"
    params = base_params(
        bi_encoder, out, data_dir / "supervised.jsonl", batch_size=4, precision="bf16", lr=1e-3
    )
    trainer = make_trainer("supervised", params)
    trainer.run()
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 4 and all(r["loss"] > 0 for r in log)
    state = torch.load(out / "checkpoints" / "step-4" / "trainer_state.pt", weights_only=False)
    assert state["params"]["precision"] == "bf16"
    lora = [p for n, p in trainer.trainable() if "lora_" in n]
    assert lora and all(p.dtype == torch.float32 for p in lora)  # master weights stay fp32


def test_a_stage_from_a_standardised_encoder_drops_the_stale_statistics(
    bi_encoder: Path, data_dir: Path, tmp_path: Path
) -> None:
    from encoders import Encoder
    from encoders.standardize import fit_encoder

    std = tmp_path / "std"
    fit_encoder(Encoder.load(bi_encoder), SENTENCES, std)
    params = base_params(std, tmp_path / "out", data_dir / "supervised.jsonl", batch_size=4)
    trainer = make_trainer("supervised", params)
    trainer._prepare_output()
    trainer.setup()
    assert trainer.stage.input_config.standardize is not None
    assert trainer.stage.output_config.standardize is None  # refit on the trained model

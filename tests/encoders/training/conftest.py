"""Tiny models and data files for the training tests (built in-process, no downloads)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from encoders import EncoderConfig
from encoders.testing import tiny_model_folder
from encoders.training import Trainer, make_trainer

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Vitamin D deficiency is associated with an increased risk of infection.",
    "Search engines rank documents by the cosine similarity of their embeddings.",
    "Large language models turn text into vectors when their attention is bidirectional.",
    "Retrieve relevant passages that answer the query about proteins, cells and genes.",
    "Given a scientific claim, retrieve documents that support or refute the claim.",
    "A man is playing a guitar on the street.",
    "Two women are embracing while holding packages.",
]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (a busy machine makes extra OpenMP threads spin);
    the previous setting is restored for the other test packages."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_folder(tmp_path_factory.mktemp("train-model") / "llama", "llama")


@pytest.fixture(scope="session")
def bi_encoder(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An encoder folder: the tiny model, bidirectional, mean pooling, no adapters."""
    folder = tmp_path_factory.mktemp("train-enc") / "bi"
    EncoderConfig(name="tiny-bi", base_model=str(tiny_model), attention="bidirectional").save(
        folder
    )
    return folder


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("train-data")
    texts = SENTENCES * 3
    (folder / "texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    pairs = zip(SENTENCES, SENTENCES[1:] + SENTENCES[:1], strict=True)
    (folder / "pairs.jsonl").write_text(
        "".join(json.dumps({"text": a, "next": b}) + "\n" for a, b in pairs)
    )
    rows = []
    for i, query in enumerate(SENTENCES):
        rows.append(
            {
                "query": query.split(",")[0],
                "positive": query,
                "negatives": [SENTENCES[(i + 3) % len(SENTENCES)]],
            }
        )
    (folder / "supervised.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def base_params(encoder: Path, out: Path, data: Path, **extra: object) -> dict[str, object]:
    params: dict[str, object] = {
        "from": str(encoder),
        "out": str(out),
        "data": [str(data)],
        "max_steps": 4,
        "save_steps": 2,
        "progress": False,
        "lora_r": 4,
        "lora_alpha": 8,
    }
    params.update(extra)
    return params


Train = Callable[..., Trainer]


@pytest.fixture(scope="session")
def train(bi_encoder: Path, data_dir: Path) -> Train:
    """``train(stage, out, data, **params)``: a ``stage`` run from :func:`bi_encoder` on the file
    ``data`` of :func:`data_dir` into ``out`` (:func:`base_params` plus ``params``), to its end;
    returns the trainer, whose encoder holds the trained weights."""

    def run(stage: str, out: Path, data: str, **extra: object) -> Trainer:
        trainer = make_trainer(stage, base_params(bi_encoder, out, data_dir / data, **extra))
        trainer.run()
        return trainer

    return run

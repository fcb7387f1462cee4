"""Encoders and data for the retrain tests: a good and a bad encoder over the same tiny model,
an evaluation set on which the good one must win, and a corpus for the alias."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from encoders.config import EncoderConfig

TRAINER_MODULE = "tests.workers.retrain_trainers"
TRAINER_NAME = "copy-encoder"
N_DOCS = 12
WORDS = ["protein", "cell", "gene", "vitamin", "infection", "search", "engine", "vector", "model",
         "query", "index", "brown"]  # fmt: skip


def texts() -> list[str]:
    """Distinct texts that all start with the same token ('doc')."""
    return [f"doc {WORDS[i]} {WORDS[(i * 5 + 3) % N_DOCS]} number {i}" for i in range(N_DOCS)]


def encoders(tmp: Path, tiny_model: Path) -> tuple[Path, Path]:
    """(good, bad) encoder folders over ``tiny_model``.

    good: bidirectional attention, mean pooling: a text's vector is its own, so a query equal to
    a document's text finds that document first (nDCG@10 = 1 without an instruction).
    bad: causal attention pooled at the first token, which sees only itself: every text starting
    with 'doc' gets the same vector, so every document ties and the ranking is arbitrary."""
    good, bad = tmp / "enc-good", tmp / "enc-bad"
    EncoderConfig(name="good", base_model=str(tiny_model), attention="bidirectional",
                  pooling="mean").save(good)  # fmt: skip
    EncoderConfig(name="bad", base_model=str(tiny_model), attention="causal",
                  pooling="first_token").save(bad)  # fmt: skip
    return good, bad


def eval_set(tmp: Path) -> Path:
    """A BEIR folder: each query is one document's text, judged relevant to it (train split)."""
    root = tmp / "eval-set"
    (root / "qrels").mkdir(parents=True)
    docs = texts()
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(docs))
    )
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": t}) + "\n" for i, t in enumerate(docs))
    )
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(N_DOCS))
    (root / "qrels" / "train.tsv").write_text(qrels)
    (root / "qrels" / "test.tsv").write_text(qrels)
    return root


def corpus(tmp: Path) -> tuple[Path, list[dict[str, Any]]]:
    docs = [{"id": f"d{i}", "text": t} for i, t in enumerate(texts())]
    path = tmp / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path, docs


def retrain_spec(alias: str, source: Path, evals: Path, **extra: Any) -> dict[str, Any]:
    return {"alias": alias, "trainer": "copy-encoder", "params": {"source": str(source)},
            "eval_set": str(evals), "no_instruction": True, **extra}  # fmt: skip

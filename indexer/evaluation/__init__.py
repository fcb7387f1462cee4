"""Evaluation harness: BEIR retrieval (dense exact cosine and BM25), STS-B Spearman, and the
Echo-embeddings prefix test. Used by ``ember eval`` and ``bench/quality.py``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from indexer.evaluation.data import (
    BeirDataset,
    EchoTriple,
    EvalDataError,
    StsPairs,
    default_data_dir,
    load_beir,
    load_echo_triples,
    load_sts,
)
from indexer.evaluation.metrics import (
    RetrievalScores,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
    score_run,
    spearman,
)

if TYPE_CHECKING:
    from encoders import Encoder

__all__ = [
    "BeirDataset",
    "EchoTriple",
    "EvalDataError",
    "RetrievalScores",
    "StsPairs",
    "default_data_dir",
    "default_instruction",
    "load_beir",
    "load_echo_triples",
    "load_sts",
    "mrr_at_k",
    "ndcg_at_k",
    "recall_at_k",
    "score_run",
    "spearman",
]


def default_instruction(encoder: Encoder, task: str) -> str | None:
    """LLM2Vec-style: decoder encoders get the task instruction; encoder-only models (BERT-like,
    e.g. all-MiniLM-L6-v2, trained without instructions) get none."""
    from encoders.instructions import instruction_for

    return instruction_for(task) if encoder.decoder else None

"""Typed parameters of the training stages (the CLI and the worker jobs fill the same models).

Every stage reads an input encoder (``from``: a preset, an encoder folder or an HF folder) and
writes a new encoder folder (``out``). Unknown keys are errors, so a typo in a worker job's
params fails before any work is done.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from encoders.config import Attention, Pooling
from encoders.llara import LlaraSettings, PoolPart

# Linear layers that get LoRA, matched by the last component of the module name.
DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def default_data_dir() -> Path:
    """``$EMBER_TRAIN_DATA_DIR``, else ``<repo>/../shared/data`` (where CI puts the data)."""
    env = os.environ.get("EMBER_TRAIN_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()


class TrainParams(BaseModel):
    """Parameters every stage shares."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_encoder: str = Field(alias="from", description="input encoder: preset, folder, HF folder")
    out: Path = Field(description="output encoder folder (checkpoints under out/checkpoints)")
    data: list[str] = Field(
        default_factory=list, description="data files/folders; empty = the stage's shared data"
    )
    data_format: Literal["auto", "jsonl", "lines", "wikitext"] = "auto"
    max_examples: int | None = Field(default=None, ge=1, description="use the first N examples")
    max_steps: int = Field(default=200, ge=1)
    batch_size: int = Field(default=16, ge=1)
    lr: float = Field(default=5e-5, gt=0)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    lora_r: int = Field(default=16, ge=1)
    lora_alpha: float = Field(default=32.0, gt=0)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGETS))
    max_length: int = Field(default=128, ge=8, description="tokens per training text")
    attention: Attention | None = Field(
        default=None, description="attention of the output encoder; None = the stage default"
    )
    pooling: Pooling | None = Field(
        default=None, description="pooling of the output encoder; None = the stage default"
    )
    seed: int = 42
    save_steps: int = Field(default=50, ge=1)
    save_total_limit: int = Field(default=2, ge=1)
    resume: bool = Field(default=False, description="continue from out/checkpoints/step-N")
    overwrite: bool = Field(default=False, description="replace an earlier run's output")
    live_adapter: bool = Field(
        default=False, description="keep the new adapter live in the output (default: merged)"
    )
    name: str | None = Field(default=None, description="output encoder name")
    progress: bool = True
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads")
    device: str = Field(
        default="cpu", description="torch device: cpu, cuda, cuda:N, or auto (cuda if available)"
    )
    precision: Literal["fp32", "bf16", "auto"] = Field(
        default="fp32",
        description="bf16 autocast for forward and backward (LoRA weights and optimizer stay "
        "fp32); auto = bf16 where the device has fast bf16 (avx512_bf16 / AMX / CUDA)",
    )


# Fields that may change between a run and its resumption.
# ``max_steps`` may change too: the linear decay then re-targets the new total from the
# checkpointed step (the data order, a function of seed and step, is unchanged).
RESUMABLE_CHANGES = {
    "device",
    "precision",
    "max_steps",
    "resume",
    "overwrite",
    "progress",
    "threads",
    "save_steps",
    "save_total_limit",
    "name",
}


class MntpParams(TrainParams):
    """Masked next-token prediction (LLM2Vec step 2) on a bidirectional model."""

    batch_size: int = Field(default=8, ge=1)
    lr: float = Field(default=5e-5, gt=0)
    mask_token: str | None = Field(
        default=None,
        description="token that replaces masked inputs; None = the tokenizer's mask token, "
        "else '_' (LLM2Vec's choice for models without one)",
    )
    mask_prob: float = Field(default=0.2, gt=0, lt=1)


class SimcseParams(TrainParams):
    """Unsupervised SimCSE: the same sentence twice, two dropout masks, in-batch negatives."""

    batch_size: int = Field(default=32, ge=2)
    lr: float = Field(default=3e-5, gt=0)
    temperature: float = Field(default=0.05, gt=0)
    dropout: float = Field(
        default=0.3, ge=0, lt=1, description="model (attention) and LoRA dropout, as LLM2Vec"
    )
    max_length: int = Field(default=64, ge=8)


class SupervisedParams(TrainParams):
    """Supervised contrastive: instructed queries, positives, hard + in-batch negatives."""

    batch_size: int = Field(default=32, ge=2)
    lr: float = Field(default=1e-4, gt=0)
    temperature: float = Field(default=0.05, gt=0)
    hard_negatives: int = Field(default=1, ge=0, description="hard negatives per query")
    chunk_size: int | None = Field(
        default=8, ge=1, description="GradCache chunk (texts per forward); None = no caching"
    )
    query_max_length: int = Field(default=64, ge=8)
    max_length: int = Field(default=256, ge=8)
    corpus_pairs: list[str] = Field(
        default_factory=list,
        description="unlabelled corpora (BEIR folder or JSONL with title/text): their (title, "
        "text) pairs, or (sentence, rest) where a record has no title, form one more source",
    )
    scored_pairs: list[str] = Field(
        default_factory=list,
        description="graded sentence pairs (STS-B train CSV, or JSONL text1/text2/score), "
        "one more source trained with CoSENT",
    )
    cosent_scale: float = Field(default=20.0, gt=0)
    mining: Literal["bm25", "random"] = Field(
        default="bm25", description="hard negatives for BEIR folders (JSONL/SNLI bring their own)"
    )
    mining_depth: int = Field(default=30, ge=2, description="BM25 candidates per query")
    pooler: Literal["latent_attention", "multi_layer"] | None = Field(
        default=None, description="train a new pooler of this kind (encoders.poolers)"
    )
    pooler_options: dict[str, int | float | str] = Field(default_factory=dict)
    freeze_model: bool = Field(
        default=False, description="train only the pooler (no LoRA); needs --pooler"
    )
    dropout: float | None = Field(
        default=None, ge=0, lt=1, description="model dropout; None = the model's own"
    )
    teacher: str | None = Field(
        default=None,
        description="teacher encoder (preset or folder): the student also learns the teacher's "
        "softmax over each batch's documents (KL), mixed with the gold loss by distill_weight",
    )
    distill_weight: float = Field(
        default=0.5, ge=0, le=1, description="share of the distillation loss (needs teacher)"
    )
    teacher_temperature: float = Field(
        default=0.05, gt=0, description="temperature of the teacher's cosines"
    )

    @model_validator(mode="after")
    def _pooler(self) -> SupervisedParams:
        if self.freeze_model and self.pooler is None:
            raise ValueError("freeze_model needs a pooler to train")
        return self

    @model_validator(mode="after")
    def _teacher(self) -> SupervisedParams:
        given = self.model_fields_set & {"distill_weight", "teacher_temperature"}
        if given and self.teacher is None:
            raise ValueError(f"{sorted(given)[0]} needs a teacher")
        return self


class LlaraParams(TrainParams):
    """LLaRA EBAE/EBAR pre-training with bag-of-words losses."""

    batch_size: int = Field(default=8, ge=1)
    lr: float = Field(default=1e-4, gt=0)
    num_placeholders: int = Field(default=8, ge=1, le=64)
    ebae_prompt: str = LlaraSettings().ebae_prompt
    ebar_prompt: str = LlaraSettings().ebar_prompt
    query_pool: PoolPart = "both"
    document_pool: PoolPart = "both"
    remove_stopwords: bool = Field(
        default=True, description="drop stop words and punctuation from the bag-of-words targets"
    )
    ebar_weight: float = Field(default=1.0, ge=0)
    train_placeholders: bool = Field(
        default=True, description="train the placeholder embeddings (peft trainable tokens)"
    )

    def settings(self) -> LlaraSettings:
        return LlaraSettings(
            num_placeholders=self.num_placeholders,
            ebae_prompt=self.ebae_prompt,
            ebar_prompt=self.ebar_prompt,
            query_pool=self.query_pool,
            document_pool=self.document_pool,
        )

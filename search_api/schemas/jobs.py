"""``/jobs``: the index, train and retrain requests and the job record the API returns."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from indexer.spec import IndexSpec
from search_api.schemas.fields import Text, ValidUnicode
from workers.client import DEFAULT_MIN_GAIN, DEFAULT_SPLIT

MAX_INLINE_DOCUMENTS = 100_000


class IndexJobRequest(IndexSpec):
    """An :class:`indexer.spec.IndexSpec` (its rules: one place) plus the corpus and batching."""

    model_config = ConfigDict(
        extra="forbid",
        regex_engine="python-re",  # the collection pattern needs a look-ahead
        json_schema_extra={"oneOf": [{"required": ["documents"]}, {"required": ["path"]}]},
    )

    # Not nullable in the schema: the default None only means "absent" (exactly one of documents
    # or path is required). A `| None` union would locate errors at "documents.list[...]".
    documents: Annotated[list[dict[str, Any]], ValidUnicode] = Field(
        default=None,  # type: ignore[arg-type]
        description="inline corpus records: id, text, optional title, source, metadata",
        min_length=1,
        max_length=MAX_INLINE_DOCUMENTS,
    )
    path: str = Field(  # type: ignore[assignment]
        default=None,
        description="a corpus inside EMBER_JOB_INPUT_DIR (relative to it), read by the worker",
        min_length=1,
        max_length=4096,
    )
    batch_docs: int | None = Field(default=None, ge=1, le=100_000, description="docs per task")

    @model_validator(mode="after")
    def _one_source(self) -> IndexJobRequest:
        if (self.documents is None) == (self.path is None):
            raise ValueError("give exactly one of 'documents' or 'path'")
        return self


class TrainJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trainer: Text = Field(min_length=1, max_length=200, description="a registered trainer name")
    params: Annotated[dict[str, Any], ValidUnicode] = Field(
        default_factory=dict,
        description="passed to the trainer; paths (data, corpus_pairs, scored_pairs, from when "
        "not a preset) inside EMBER_JOB_INPUT_DIR, out inside EMBER_JOB_OUTPUT_DIR",
    )


class RetrainJobRequest(BaseModel):
    """:class:`workers.retrain_spec.RetrainSpec` as a request: the same fields and limits."""

    model_config = ConfigDict(extra="forbid", regex_engine="python-re")

    alias: str = Field(
        min_length=1, max_length=200, pattern=r"^(?!.*__)[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="the served alias to retrain; its build must record its encoder and corpus "
        "(index jobs do), else give current_encoder and corpus",
    )  # fmt: skip
    trainer: Text = Field(min_length=1, max_length=200, description="a registered trainer name")
    params: Annotated[dict[str, Any], ValidUnicode] = Field(
        default_factory=dict,
        description="trainer parameters (not 'from': training starts from the serving encoder); "
        "'out' inside EMBER_JOB_OUTPUT_DIR, default <EMBER_JOB_OUTPUT_DIR>/retrain/<job id>",
    )
    eval_set: Text = Field(
        min_length=1, max_length=4096, description="BEIR folder inside EMBER_JOB_INPUT_DIR"
    )
    split: str = Field(
        default=DEFAULT_SPLIT, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$",
        description="qrels split the encoders are compared on; 'test' needs allow_test",
    )  # fmt: skip
    allow_test: bool = False
    metric: Literal["ndcg@10", "recall@100", "mrr@10"] = "ndcg@10"
    min_gain: float = Field(
        default=DEFAULT_MIN_GAIN, ge=0.0, le=1.0,
        description="promote only if candidate - current >= min_gain on the metric",
    )  # fmt: skip
    task: Text = Field(default="web_search", max_length=100)
    instruction: Text | None = Field(default=None, max_length=2000)
    no_instruction: bool = False
    corpus: Text | None = Field(
        default=None, min_length=1, max_length=4096,
        description="corpus to rebuild from, inside EMBER_JOB_INPUT_DIR; default: the one the "
        "serving build records",
    )  # fmt: skip
    format: Literal["auto", "jsonl", "beir", "csv", "dir"] = "auto"
    current_encoder: Text | None = Field(default=None, min_length=1, max_length=4096)
    keep_versions: int = Field(default=1, ge=0, le=100)


class JobProgress(BaseModel):
    batches_total: int
    batches_done: int
    batches_failed: int
    documents_total: int
    documents_done: int
    points: int
    percent: float | None
    rate_docs_per_s: float | None
    eta_s: float | None


class JobError(BaseModel):
    batch: int
    error: str | None


class JobOut(BaseModel):
    id: str
    kind: Literal["index", "train", "retrain"]
    state: Literal["queued", "planning", "running", "finishing", "succeeded", "failed"]
    params: dict[str, Any]
    created_at: float
    started_at: float | None
    finished_at: float | None
    collection: str | None
    build: str | None
    progress: JobProgress
    errors: list[JobError]
    skipped: list[str]
    error: str | None
    result: dict[str, Any]
    owner: dict[str, Any] | None = Field(
        default=None,
        description="the process running an in-process job (host, pid, start time); when it is "
        "gone the job is failed with error 'owner died'",
    )


class JobsOut(BaseModel):
    jobs: list[JobOut]

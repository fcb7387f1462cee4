"""What a retrain job is asked to do: one validated :class:`RetrainSpec`, shared by the CLI
(``ember jobs retrain``), the API (``POST /jobs/retrain``), beat entries and the tasks.

This module is light (pydantic only): the API and the Celery app import it without loading the
task code, encoders or torch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# A candidate must beat the serving encoder by this much (absolute, on the chosen metric) to be
# promoted: half a point of nDCG@10 is about the noise of a few hundred judged queries, so a
# retrain that only reshuffles ties does not trigger a full reindex.
DEFAULT_MIN_GAIN = 0.005
DEFAULT_SPLIT = "train"
METRICS = ("ndcg@10", "recall@100", "mrr@10")
Metric = Literal["ndcg@10", "recall@100", "mrr@10"]
CORPUS_FORMATS = Literal["auto", "jsonl", "beir", "csv", "dir"]
STAGES = ("train", "evaluate", "reindex", "promote")
# training parameters the pipeline sets itself (the serving encoder is where training starts)
PIPELINE_PARAMS = ("from", "from_encoder")


class RetrainSpec(BaseModel):
    """train ``trainer`` from the encoder serving ``alias`` -> evaluate candidate and current on
    ``eval_set`` (a BEIR folder, qrels split ``split``) -> if the candidate wins by at least
    ``min_gain`` on ``metric``: rebuild the alias's corpus with it and move the alias."""

    model_config = ConfigDict(extra="forbid", frozen=True, regex_engine="python-re")

    alias: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^(?!.*__)[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="the served alias to retrain, evaluate and (maybe) rebuild",
    )
    trainer: str = Field(min_length=1, max_length=200, description="a registered trainer name")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="trainer parameters; 'from' is set by the pipeline (the serving encoder), "
        "'out' defaults to <EMBER_JOB_OUTPUT_DIR>/retrain/<job id>",
    )
    eval_set: str = Field(
        min_length=1, max_length=4096, description="BEIR folder (corpus, queries, qrels/<split>)"
    )
    split: str = Field(
        default=DEFAULT_SPLIT, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$"
    )
    allow_test: bool = Field(
        default=False, description="allow choosing on the test split (it stops being a test)"
    )
    metric: Metric = "ndcg@10"
    min_gain: float = Field(default=DEFAULT_MIN_GAIN, ge=0.0, le=1.0)
    task: str = Field(
        default="web_search", max_length=100, description="query instruction task (decoders)"
    )
    instruction: str | None = Field(default=None, max_length=2000)
    no_instruction: bool = Field(default=False, description="encode queries with no instruction")
    corpus: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="corpus to rebuild from; default: the corpus path the serving build records",
    )
    format: CORPUS_FORMATS = "auto"
    current_encoder: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="the serving build's encoder, for builds that do not record it (ember index)",
    )
    keep_versions: int = Field(default=1, ge=0, le=100)

    @model_validator(mode="after")
    def _checks(self) -> RetrainSpec:
        if self.split == "test" and not self.allow_test:
            raise ValueError(
                "split 'test': choosing an encoder on the test split makes it a training split; "
                "use a train/dev split, or set allow_test"
            )
        given = [k for k in PIPELINE_PARAMS if k in self.params]
        if given:
            raise ValueError(
                f"params.{given[0]}: the retrain pipeline trains from the encoder serving the "
                "alias; do not set it"
            )
        if self.instruction is not None and self.no_instruction:
            raise ValueError("instruction and no_instruction exclude each other")
        return self


def parse_spec(data: Any) -> RetrainSpec:
    """A spec from a JSON object; ``ValueError`` naming the first bad field."""
    if isinstance(data, RetrainSpec):
        return data
    try:
        return RetrainSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first.get("msg", "")).removeprefix("Value error, ")
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ValueError(f"{where}: {message}" if where else message) from None


def initial_result(spec: RetrainSpec) -> dict[str, Any]:
    """A retrain job's ``result`` before it starts: every stage pending, no scores yet."""
    return {
        "alias": spec.alias,
        "stage": None,
        "stages": {stage: {"state": "pending"} for stage in STAGES},
        "metric": spec.metric,
        "min_gain": spec.min_gain,
        "current": None,
        "candidate": None,
        "scores": None,
        "decision": None,
        "reason": None,
    }

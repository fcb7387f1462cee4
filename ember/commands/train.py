"""``ember train mntp|simcse|supervised|llara``: adapter training, one stage per command.

Each stage reads an encoder (``--from``: preset, encoder folder or HF folder) and writes a new
encoder folder (``--out``) that ``--encoder`` / ``--from`` accept everywhere. Options left unset
take the stage's defaults (shown in ``--help``); the same parameters drive worker jobs through
``encoders.training.run(name, params)``. Data formats: docs/training.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from pydantic import BaseModel

from ember.errors import UserError

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _default(model: type[BaseModel], field: str) -> str:
    info = model.model_fields[field]
    value = info.get_default(call_default_factory=True)
    if isinstance(value, list):
        return ",".join(map(str, value)) or "the stage's shared data"
    return repr(value) if isinstance(value, str) else str(value)


def _opt(model: type[BaseModel], field: str, **kwargs: Any) -> Decorator:
    """The option ``--field-name`` of the params field ``field_name``. Its unset value is None
    (the params model's default applies); the help text shows that default."""
    help_text = kwargs.pop("help", model.model_fields[field].description or "")
    if not kwargs.get("is_flag") and model.model_fields[field].default is not None:
        help_text = f"{help_text} [default: {_default(model, field)}]".strip()
    flag = "--" + field.replace("_", "-")
    return click.option(flag, field, default=None, help=help_text, **kwargs)


def common_options(model: type[BaseModel]) -> Decorator:
    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        options: list[Decorator] = [
            click.option(
                "--from", "from_encoder", required=True, help="Input encoder: preset or folder."
            ),
            click.option("--out", required=True, help="Output encoder folder."),
            click.option(
                "--data",
                multiple=True,
                help="Data file or BEIR folder (repeatable). [default: the stage's shared data]",
            ),
            _opt(model, "data_format", type=click.Choice(["auto", "jsonl", "lines", "wikitext"])),
            _opt(model, "max_examples", type=int),
            _opt(model, "max_steps", type=int),
            _opt(model, "batch_size", type=int),
            _opt(model, "lr", type=float, help="Peak learning rate (AdamW)."),
            _opt(model, "warmup_ratio", type=float),
            _opt(model, "weight_decay", type=float),
            _opt(model, "max_grad_norm", type=float),
            _opt(model, "lora_r", type=int, help="LoRA rank."),
            _opt(model, "lora_alpha", type=float, help="LoRA alpha."),
            _opt(model, "lora_dropout", type=float, help="LoRA dropout."),
            _opt(
                model,
                "target_modules",
                help="Comma-separated linear layer names to adapt (matched by name).",
            ),
            _opt(model, "max_length", type=int),
            _opt(model, "attention", type=click.Choice(["causal", "bidirectional"])),
            _opt(
                model,
                "pooling",
                type=click.Choice(["mean", "weighted_mean", "last_token", "first_token"]),
            ),
            _opt(model, "seed", type=int),
            _opt(model, "save_steps", type=int, help="Checkpoint every N steps."),
            _opt(model, "save_total_limit", type=int),
            _opt(model, "resume", is_flag=True, help="Continue from the last checkpoint."),
            _opt(model, "overwrite", is_flag=True, help="Replace an earlier run."),
            _opt(
                model,
                "live_adapter",
                is_flag=True,
                help="Keep the new adapter live (unmerged) in the output config.",
            ),
            _opt(model, "name", help="Name of the output encoder."),
            _opt(model, "threads", type=int, help="torch CPU threads."),
            _opt(model, "device", help="cpu, cuda, cuda:N or auto."),
            _opt(
                model,
                "precision",
                type=click.Choice(["fp32", "bf16", "auto"]),
                help="bf16 autocast for the forward and backward passes (LoRA weights and "
                "optimizer state stay fp32); auto = bf16 where the CPU has avx512_bf16 / AMX "
                "or the GPU supports it, else fp32.",
            ),
            click.option(
                "--progress/--no-progress", default=True, show_default=True, help="Progress bar."
            ),
        ]
        for option in reversed(options):
            f = option(f)
        return f

    return wrap


def _run(stage: str, options: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """Options left unset (None, flags not given) fall back to the params model's defaults."""
    import logging

    from transformers.utils import logging as hf_logging

    from encoders.training import run

    if logging.getLogger().getEffectiveLevel() > logging.INFO:  # no -v: one progress bar
        hf_logging.disable_progress_bar()

    params: dict[str, Any] = {}
    for key, value in options.items():
        if value is None or value is False or value == ():
            continue
        if key == "target_modules":
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif key in ("data", "corpus_pairs", "scored_pairs"):
            value = list(value)
        params["from" if key == "from_encoder" else key] = value
    params["progress"] = bool(options.get("progress", True))
    params.update(extra or {})
    out = run(stage, params)  # errors: one line on stderr through the CLI group
    click.echo(f"wrote encoder {out}", err=True)
    click.echo(str(out))


def _parse_pooler_options(raw: tuple[str, ...]) -> dict[str, int | float | str]:
    out: dict[str, int | float | str] = {}
    for item in raw:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--pooler-option {item!r}: expected key=value")
        parsed: int | float | str = value
        for cast in (int, float):
            try:
                parsed = cast(value)
                break
            except ValueError:
                continue
        out[key] = parsed
    return out


def _stage(
    stage: str,
    model: type[BaseModel],
    help: str,
    *options: Decorator,
    extra: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> click.Command:
    """The command of one stage: the shared options of ``model``, then the stage's ``options``.
    ``extra`` takes the options that do not map one to one onto params out of what was given
    and returns the params they set."""

    def command(**given: Any) -> None:
        _run(stage, given, extra(given) if extra else None)

    for option in reversed(options):
        command = option(command)
    return click.command(stage, help=help)(common_options(model)(command))


def _mntp_command() -> click.Command:
    from encoders.training.params import MntpParams as M

    return _stage(
        "mntp",
        M,
        "Masked next-token prediction with bidirectional attention (LLM2Vec step 2).",
        _opt(M, "mask_token", help="Mask token (its id is looked up)."),
        _opt(M, "mask_prob", type=float, help="Masking probability."),
    )


def _simcse_command() -> click.Command:
    from encoders.training.params import SimcseParams as S

    return _stage(
        "simcse",
        S,
        "Unsupervised SimCSE: two dropout views, in-batch negatives (LLM2Vec step 3).",
        _opt(S, "temperature", type=float, help="InfoNCE temperature."),
        _opt(S, "dropout", type=float),
    )


def _supervised_extra(options: dict[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    raw_pooler_options = options.pop("pooler_options")
    if raw_pooler_options:
        extra["pooler_options"] = _parse_pooler_options(raw_pooler_options)
    if options.get("chunk_size") == 0:
        options.pop("chunk_size")
        extra["chunk_size"] = None
    return extra


def _supervised_command() -> click.Command:
    from encoders.training.params import SupervisedParams as P

    return _stage(
        "supervised",
        P,
        """Supervised contrastive: instructed queries, positives, hard and in-batch negatives,
        gradient caching; optionally trains a pooler (LLM2Vec step 4) and distils a teacher
        encoder's in-batch similarities.""",
        _opt(P, "temperature", type=float, help="InfoNCE temperature."),
        _opt(P, "hard_negatives", type=int),
        _opt(
            P,
            "chunk_size",
            type=int,
            help="GradCache chunk: texts per forward with a graph (0 = no caching).",
        ),
        _opt(P, "query_max_length", type=int),
        click.option(
            "--corpus-pairs",
            "corpus_pairs",
            multiple=True,
            help="Unlabelled corpus (BEIR folder or JSONL with title/text) whose (title, text) "
            "pairs form one more source; (sentence, rest) where a record has no title "
            "(repeatable).",
        ),
        click.option(
            "--scored-pairs",
            "scored_pairs",
            multiple=True,
            help="Graded sentence pairs (STS-B train CSV or JSONL text1/text2/score), one more "
            "source trained with CoSENT (repeatable).",
        ),
        _opt(P, "cosent_scale", type=float, help="CoSENT scale."),
        _opt(P, "mining", type=click.Choice(["bm25", "random"])),
        _opt(P, "mining_depth", type=int),
        _opt(P, "pooler", type=click.Choice(["latent_attention", "multi_layer"])),
        click.option(
            "--pooler-option",
            "pooler_options",
            multiple=True,
            help="Pooler hyper-parameter key=value (repeatable).",
        ),
        _opt(P, "freeze_model", is_flag=True),
        _opt(P, "dropout", type=float),
        _opt(
            P,
            "teacher",
            help="Teacher encoder (preset or folder, e.g. minilm): also learn its softmax over "
            "each batch's documents (KL distillation).",
        ),
        _opt(P, "distill_weight", type=float),
        _opt(P, "teacher_temperature", type=float),
        extra=_supervised_extra,
    )


def _llara_extra(options: dict[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if options.pop("keep_stopwords"):
        extra["remove_stopwords"] = False
    if options.pop("freeze_placeholders"):
        extra["train_placeholders"] = False
    return extra


def _llara_command() -> click.Command:
    from encoders.training.params import LlaraParams as L

    pools = click.Choice(["both", "ebae", "ebar"])
    return _stage(
        "llara",
        L,
        "LLaRA EBAE/EBAR pre-training; the output is a kind 'llara' encoder.",
        _opt(L, "num_placeholders", type=int),
        _opt(L, "ebae_prompt"),
        _opt(L, "ebar_prompt"),
        _opt(L, "query_pool", type=pools),
        _opt(L, "document_pool", type=pools),
        _opt(L, "ebar_weight", type=float),
        click.option("--keep-stopwords", is_flag=True, help="Keep stop words in the BOW targets."),
        click.option(
            "--freeze-placeholders", is_flag=True, help="Do not train the placeholder embeddings."
        ),
        extra=_llara_extra,
    )


_STAGES: dict[str, Callable[[], click.Command]] = {
    "mntp": _mntp_command,
    "simcse": _simcse_command,
    "supervised": _supervised_command,
    "llara": _llara_command,
}


class _LazyStages(click.Group):
    """Builds a stage's command on first use: the parameter models import torch, which
    ``ember --help`` and the other commands should not pay for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_STAGES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        builder = _STAGES.get(cmd_name)
        return builder() if builder else None


@click.group("train", cls=_LazyStages)
def train_group() -> None:
    """Train a LoRA adapter stage; the result is a new encoder folder.

    \b
    The LLM2Vec recipe on the bundled SmolLM2:
      ember train mntp --from smollm2-bi --out runs/mntp
      ember train simcse --from runs/mntp --out runs/simcse
      ember train supervised --from runs/simcse --out runs/supervised
    LLaRA pre-training:
      ember train llara --from smollm2 --out runs/llara
    """


COMMANDS = [train_group]

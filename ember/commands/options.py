"""Click options several commands share, declared once: integer counts with their range, choices
(corpus and output formats, search modes, fusions, bad-record handling), the encoder and query
instruction options, the chunking pair of `ember index`, and the JSON `--params` object of the
job commands."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import click

from ember.errors import UserError

Decorator = Callable[[Any], Any]


def int_option(
    *decls: str, default: int | None, min: int | None = None, max: int | None = None, help: str
) -> Decorator:
    """An integer option bounded by ``min``/``max``; its default is shown in --help when set."""
    kind = click.IntRange(min=min, max=max)
    shown = default is not None
    return click.option(*decls, type=kind, default=default, show_default=shown, help=help)


def choice_option(
    *decls: str, choices: Sequence[str], default: str | None = None, help: str | None = None
) -> Decorator:
    """An option taking one of ``choices``; its default is shown in --help when set."""
    kind = click.Choice(choices)
    shown = default is not None
    return click.option(*decls, type=kind, default=default, show_default=shown, help=help)


def format_option(choices: Sequence[str], default: str, help: str | None = None) -> Decorator:
    """``--format`` (the parameter ``fmt``): an input or output format."""
    return choice_option("--format", "fmt", choices=choices, default=default, help=help)


SEARCH_MODES = ["dense", "sparse", "hybrid"]
FUSIONS = ["rrf", "dbsf", "weighted"]


def mode_option(default: str | None, help: str) -> Decorator:
    """``--mode``: dense, sparse (BM25) or hybrid retrieval."""
    return choice_option("--mode", choices=SEARCH_MODES, default=default, help=help)


def fusion_option(default: str | None, help: str) -> Decorator:
    """``--fusion``: how hybrid retrieval fuses the dense and the BM25 scores."""
    return choice_option("--fusion", choices=FUSIONS, default=default, help=help)


def on_error_option(help: str) -> Decorator:
    """``--on-error``: a bad corpus record fails the build (the default) or is skipped."""
    return choice_option("--on-error", choices=["fail", "skip"], default="fail", help=help)


def encoder_spec_option(default: str | None, help: str) -> Decorator:
    """``--encoder`` (the parameter ``encoder_spec``, env EMBER_ENCODER): a preset or folder."""
    shown = default is not None
    return click.option(
        "--encoder",
        "encoder_spec",
        envvar="EMBER_ENCODER",
        default=default,
        show_default=shown,
        help=help,
    )


def task_option(default: str | None, help: str) -> Decorator:
    """``--task``: the task whose instruction queries get; a set default is shown in --help."""
    return click.option("--task", default=default, show_default=default is not None, help=help)


def instruction_options(
    *,
    task: tuple[str | None, str] | None = None,
    instruction: str,
    no_instruction: str | None = None,
) -> Decorator:
    """``--task`` (when ``task`` gives its default and help), ``--instruction`` (a text over the
    task's) and ``--no-instruction`` (when it has a help text), in that order."""
    options = [] if task is None else [task_option(*task)]
    options.append(click.option("--instruction", default=None, help=instruction))
    if no_instruction is not None:
        options.append(click.option("--no-instruction", is_flag=True, help=no_instruction))

    def apply(f: Any) -> Any:
        for option in reversed(options):
            f = option(f)
        return f

    return apply


def chunk_options(*, min_tokens: int, defaults: bool, when: str = "") -> Decorator:
    """``--chunk-tokens`` and ``--overlap``. With ``defaults`` they hold `ember index`'s 256 and
    32; without, None (the callee's own default, the same numbers); ``when`` prefixes the help
    (e.g. "--served: ")."""

    def apply(f: Any) -> Any:
        tokens = int_option(
            "--chunk-tokens",
            default=256 if defaults else None,
            min=min_tokens,
            help=f"{when}Tokens per chunk (the encoder's tokenizer)"
            + ("." if defaults else " [default: 256, as `ember index`]."),
        )
        overlap = int_option(
            "--overlap",
            default=32 if defaults else None,
            min=0,
            help=f"{when}Tokens shared by consecutive chunks of a document"
            + ("." if defaults else " [default: 32]."),
        )
        return tokens(overlap(f))

    return apply


def json_object(option: str, text: str) -> dict[str, Any]:
    """``text`` parsed as a JSON object, or a UserError naming ``option``."""
    try:
        parsed: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{option}: invalid JSON ({exc.msg})") from None
    if not isinstance(parsed, dict):
        raise UserError(f"{option}: expected a JSON object")
    return parsed

"""Click options several commands share, declared once: integer counts with their range, the
chunking pair of `ember index`, and the JSON `--params` object of the job commands."""

from __future__ import annotations

import json
from collections.abc import Callable
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

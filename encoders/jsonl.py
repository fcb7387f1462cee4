"""One JSONL reader for files that must be wholly valid (training data, evaluation sets), and
one reader of a JSON-object file (model folders' configs).

Corpora are read by :mod:`indexer.readers` instead, which turns a bad line into a bad record
(skipped or failed by ``--on-error``) rather than stopping at it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any


def read_json_object(path: Path, error: type[Exception] = ValueError) -> dict[str, Any]:
    """The JSON object in ``path``; unreadable, invalid or not an object raises ``error``
    naming the file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise error(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object")
    return data


def iter_jsonl(
    path: Path, error: type[Exception] = ValueError
) -> Iterator[tuple[int, dict[str, object]]]:
    """``(line number, object)`` for each non-blank line of ``path``; a line that is not a JSON
    object raises ``error`` with ``path:line:`` and the reason."""
    with path.open(encoding="utf-8") as stream:
        yield from parse_jsonl(stream, lambda n: f"{path}:{n}", error)


def parse_jsonl(
    lines: Iterable[str], where: Callable[[int], str], error: type[Exception] = ValueError
) -> Iterator[tuple[int, dict[str, object]]]:
    """:func:`iter_jsonl` over any lines (a stream such as stdin); ``where(n)`` names line
    ``n`` in the messages."""
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise error(f"{where(lineno)}: invalid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise error(f"{where(lineno)}: expected a JSON object")
        yield lineno, record

"""What every training data reader shares: :class:`DataError` (naming the file and line), the
text field check, the path check and the sentence splitter."""

from __future__ import annotations

import re
from pathlib import Path

from encoders.errors import EmberError


class DataError(EmberError, ValueError):
    """Unusable training data; the message names the file (and line)."""

    status = 422


def text_field(record: dict[str, object], key: str, where: str, required: bool = True) -> str:
    value = record.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise DataError(f"{where}: field {key!r} is missing or not a non-empty string")
    return value


def _check(path: Path) -> Path:
    if not path.exists():
        raise DataError(f"no such data file or folder: {path}")
    return path


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def split_sentences(paragraph: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(paragraph) if s.strip()]

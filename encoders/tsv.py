"""Tab-separated files: one line splitter (qrels, STS-B) and one STS Benchmark reader (training
pairs and the STS evaluation share it).

STS-B columns: genre, file, year, id, score, sentence 1, sentence 2 [, sources...]. The original
files carry two extra source columns on some lines; they are ignored. Fields are split on tabs
only (the sentences contain quotes, so no CSV quoting rules apply); blank lines are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path


def iter_tsv(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` per non-blank line, split on tabs only, CR/LF stripped."""
    with path.open(encoding="utf-8") as stream:
        for lineno, raw in enumerate(stream, start=1):
            line = raw.rstrip("\n").rstrip("\r")
            if line.strip():
                yield lineno, line.split("\t")


def iter_sts_tsv(
    path: Path, error: type[Exception] = ValueError
) -> Iterator[tuple[int, str, str, float]]:
    """``(line number, sentence 1, sentence 2, score)`` per non-blank line; a line with fewer
    than 7 fields or a score that is not a number raises ``error`` naming ``path:line``.
    Empty sentences and the score's range are the caller's policy."""
    for lineno, parts in iter_tsv(path):
        if len(parts) < 7:
            raise error(f"{path}:{lineno}: expected at least 7 tab-separated STS-B fields")
        try:
            score = float(parts[4])
        except ValueError:
            raise error(f"{path}:{lineno}: score {parts[4]!r} is not a number") from None
        yield lineno, parts[5], parts[6], score

"""TREC run files and qrels: what search systems exchange to be compared on the same judgements.

- Run file (what ``trec_eval`` reads): one ``qid Q0 docid rank score tag`` line per retrieved
  document, whitespace-separated. trec_eval orders by score and ignores the rank column;
  :func:`write_run` writes each query in trec_eval's order (score descending, equal scores by doc
  id descending), so the rank column is the rank that is scored. Scores are written with
  ``repr`` so a run read back scores exactly like the one written.
- Qrels: TREC's ``qid 0 docid rel`` (whitespace-separated) or BEIR's TSV
  ``query-id<TAB>corpus-id<TAB>score`` with that header line (the format is told by the first
  line).

Readers are strict, like :mod:`indexer.evaluation.data`: a bad line is an :class:`EvalDataError`
naming the file and line.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from indexer.evaluation.data import (
    QRELS_HEADER,
    EvalDataError,
    add_judgement,
    checked_qrels,
    load_qrels,
)
from indexer.evaluation.metrics import trec_order

RunDict = dict[str, list[tuple[str, float]]]


def _check_token(value: str, what: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"{what} {value!r} is empty or holds whitespace (a run file field)")


def write_run(
    path: str | Path, run: Mapping[str, Sequence[tuple[str, float]]], tag: str = "ember"
) -> Path:
    """Write ``run`` (query id -> (doc id, score) pairs) as a TREC run file, atomically."""
    _check_token(tag, "tag")
    out = Path(path)
    lines = []
    for qid, docs in run.items():
        _check_token(qid, "query id")
        for rank, (docid, score) in enumerate(trec_order(list(docs)), start=1):
            _check_token(docid, "doc id")
            lines.append(f"{qid} Q0 {docid} {rank} {float(score)!r} {tag}\n")
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    tmp.replace(out)
    return out


def _fields(file: Path, count: int, expected: str) -> Iterator[tuple[int, str, list[str]]]:
    """Line number, ``file:line`` and the whitespace-separated fields of each non-blank line;
    an :class:`EvalDataError` for a line without ``count`` fields (``expected`` names them)."""
    with file.open(encoding="utf-8") as stream:
        for lineno, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            where = f"{file}:{lineno}"
            parts = raw.split()
            if len(parts) != count:
                raise EvalDataError(
                    f"{where}: expected {count} fields {expected}, got {len(parts)}"
                )
            yield lineno, where, parts


def read_run(path: str | Path) -> RunDict:
    """A TREC run file as query id -> (doc id, score) pairs, in file order."""
    file = Path(path)
    if not file.is_file():
        raise EvalDataError(f"{file}: no such run file")
    run: RunDict = {}
    seen: dict[tuple[str, str], int] = {}
    for lineno, where, parts in _fields(file, 6, "(qid Q0 docid rank score tag)"):
        qid, _, docid, rank, score_text, _ = parts
        try:
            int(rank)
        except ValueError:
            raise EvalDataError(f"{where}: rank {rank!r} is not an integer") from None
        try:
            score = float(score_text)
        except ValueError:
            raise EvalDataError(f"{where}: score {score_text!r} is not a number") from None
        if not math.isfinite(score):
            raise EvalDataError(f"{where}: score {score_text!r} is not finite")
        if (qid, docid) in seen:
            raise EvalDataError(
                f"{where}: document {docid!r} listed twice for query {qid!r} "
                f"(first on line {seen[qid, docid]})"
            )
        seen[qid, docid] = lineno
        run.setdefault(qid, []).append((docid, score))
    if not run:
        raise EvalDataError(f"{file}: empty run file")
    return run


def _first_line(file: Path) -> str:
    with file.open(encoding="utf-8") as stream:
        for raw in stream:
            if raw.strip():
                return raw.rstrip("\r\n")
    return ""


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """TREC qrels (``qid 0 docid rel``) or BEIR qrels TSV (``query-id corpus-id score``)."""
    file = Path(path)
    if not file.is_file():
        raise EvalDataError(f"{file}: no such qrels file")
    first = _first_line(file)
    if tuple(p.strip() for p in first.split("\t")) == QRELS_HEADER or len(first.split("\t")) == 3:
        return load_qrels(file)
    qrels: dict[str, dict[str, int]] = {}
    for _, where, parts in _fields(file, 4, "(qid 0 docid rel) or a BEIR qrels TSV"):
        qid, _, docid, rel_text = parts
        add_judgement(qrels, where, qid, docid, rel_text, "relevance")
    return checked_qrels(qrels, file)

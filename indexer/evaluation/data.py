"""Evaluation data readers: BEIR folders, STS-B files, the Echo-embeddings toy triples.

Readers are strict: a bad record is a :class:`EvalDataError` naming the file and line, never
silently dropped (evaluation numbers on a partly read dataset would be quietly wrong).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from encoders.errors import EmberError
from encoders.jsonl import iter_jsonl
from encoders.tsv import iter_sts_tsv, iter_tsv

QRELS_HEADER = ("query-id", "corpus-id", "score")


class EvalDataError(EmberError, ValueError):
    """A dataset file is missing or malformed; the message names the file (and line)."""

    status = 422


def default_data_dir() -> Path:
    """``$EMBER_EVAL_DATA``, else ``<repo>/../shared/data`` (CI clones shared/ beside the repo)."""
    env = os.environ.get("EMBER_EVAL_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _str_field(record: dict[str, object], key: str, where: str, *, required: bool) -> str:
    value = record.get(key)
    if value is None and not required:
        return ""
    if key == "_id" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise EvalDataError(f"{where}: field {key!r} is missing or not a string")
    return value


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR folder: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``.

    ``doc_texts`` follow the BEIR convention ``(title + " " + text).strip()``. ``qrels`` maps
    query id -> doc id -> graded relevance; ``missing_docs`` counts qrels entries whose document
    is not in the corpus (kept: they still count in recall and ideal DCG, as in trec_eval).
    """

    name: str
    path: Path
    split: str
    doc_ids: list[str]
    doc_texts: list[str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    @property
    def eval_query_ids(self) -> list[str]:
        """Queries with at least one relevant (score > 0) document, in qrels file order."""
        return [q for q, rels in self.qrels.items() if any(r > 0 for r in rels.values())]

    @cached_property
    def missing_docs(self) -> int:
        """Judgements whose document is not in the corpus."""
        known = set(self.doc_ids)
        return sum(1 for rels in self.qrels.values() for d in rels if d not in known)


def load_corpus(path: Path) -> tuple[list[str], list[str]]:
    ids: list[str] = []
    texts: list[str] = []
    seen: dict[str, int] = {}
    for lineno, record in iter_jsonl(path, EvalDataError):
        where = f"{path}:{lineno}"
        doc_id = _str_field(record, "_id", where, required=True)
        if not doc_id:
            raise EvalDataError(f"{where}: empty '_id'")
        if doc_id in seen:
            raise EvalDataError(f"{where}: duplicate _id {doc_id!r} (first on line {seen[doc_id]})")
        seen[doc_id] = lineno
        title = _str_field(record, "title", where, required=False)
        text = _str_field(record, "text", where, required=True)
        ids.append(doc_id)
        texts.append(f"{title} {text}".strip())
    if not ids:
        raise EvalDataError(f"{path}: no documents")
    return ids, texts


def load_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for lineno, record in iter_jsonl(path, EvalDataError):
        where = f"{path}:{lineno}"
        qid = _str_field(record, "_id", where, required=True)
        if qid in queries:
            raise EvalDataError(f"{where}: duplicate query _id {qid!r}")
        text = _str_field(record, "text", where, required=True)
        if not text.strip():
            raise EvalDataError(f"{where}: empty query text")
        queries[qid] = text
    return queries


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """``query-id<TAB>corpus-id<TAB>score`` lines, with an optional header line."""
    qrels: dict[str, dict[str, int]] = {}
    for lineno, parts in iter_tsv(path):
        if lineno == 1 and tuple(p.strip() for p in parts) == QRELS_HEADER:
            continue
        if len(parts) != 3:
            raise EvalDataError(
                f"{path}:{lineno}: expected 3 tab-separated fields "
                f"(query-id, corpus-id, score), got {len(parts)}"
            )
        qid, did, score = (p.strip() for p in parts)
        if not qid or not did:
            raise EvalDataError(f"{path}:{lineno}: empty query or corpus id")
        add_judgement(qrels, f"{path}:{lineno}", qid, did, score, "score")
    return checked_qrels(qrels, path)


def add_judgement(
    qrels: dict[str, dict[str, int]], where: str, qid: str, did: str, grade: str, what: str
) -> None:
    """Record one judgement line (BEIR TSV or TREC qrels): an integer grade, no duplicates."""
    try:
        rel = int(grade)
    except ValueError:
        raise EvalDataError(f"{where}: {what} {grade!r} is not an integer") from None
    rels = qrels.setdefault(qid, {})
    if did in rels:
        raise EvalDataError(f"{where}: duplicate judgement ({qid}, {did})")
    rels[did] = rel


def checked_qrels(qrels: dict[str, dict[str, int]], path: Path) -> dict[str, dict[str, int]]:
    if not qrels:
        raise EvalDataError(f"{path}: no judgements")
    return qrels


def load_beir(path: str | Path, split: str = "test") -> BeirDataset:
    root = Path(path)
    if not root.is_dir():
        raise EvalDataError(
            f"{root}: not a BEIR folder (expected corpus.jsonl, queries.jsonl, qrels/)"
        )
    files = {
        "corpus": root / "corpus.jsonl",
        "queries": root / "queries.jsonl",
        "qrels": root / "qrels" / f"{split}.tsv",
    }
    for what, file in files.items():
        if not file.is_file():
            raise EvalDataError(f"{root}: missing {what} file {file.relative_to(root)}")
    doc_ids, doc_texts = load_corpus(files["corpus"])
    queries = load_queries(files["queries"])
    return BeirDataset(
        name=root.name,
        path=root,
        split=split,
        doc_ids=doc_ids,
        doc_texts=doc_texts,
        queries=queries,
        qrels=_load_judged_queries(files["qrels"], queries),
    )


def _load_judged_queries(path: Path, queries: dict[str, str]) -> dict[str, dict[str, int]]:
    """The qrels of ``path``, whose judged queries must all be in ``queries``."""
    qrels = load_qrels(path)
    unknown = [q for q in qrels if q not in queries]
    if unknown:
        raise EvalDataError(
            f"{path}: {len(unknown)} judged queries are not in queries.jsonl "
            f"(first: {unknown[0]!r})"
        )
    return qrels


# ---- STS-B -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StsPairs:
    path: Path
    first: list[str]
    second: list[str]
    scores: list[float]

    def __len__(self) -> int:
        return len(self.scores)


def resolve_sts_file(path: str | Path, split: str = "test") -> Path:
    """A file is used as is; a folder must hold ``sts-<split>.csv``."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        file = p / f"sts-{split}.csv"
        if file.is_file():
            return file
        raise EvalDataError(f"{p}: no sts-{split}.csv in this folder")
    raise EvalDataError(f"{p}: no such file or folder")


def load_sts(path: str | Path, split: str = "test") -> StsPairs:
    """STS Benchmark TSV (:func:`encoders.tsv.iter_sts_tsv`); scores must lie in [0, 5] and
    no sentence may be empty."""
    file = resolve_sts_file(path, split)
    first: list[str] = []
    second: list[str] = []
    scores: list[float] = []
    for lineno, sentence1, sentence2, score in iter_sts_tsv(file, EvalDataError):
        if not 0.0 <= score <= 5.0:
            raise EvalDataError(f"{file}:{lineno}: score {score} outside [0, 5]")
        if not sentence1.strip() or not sentence2.strip():
            raise EvalDataError(f"{file}:{lineno}: empty sentence")
        first.append(sentence1)
        second.append(sentence2)
        scores.append(score)
    if len(scores) < 2:
        raise EvalDataError(f"{file}: fewer than 2 sentence pairs")
    return StsPairs(path=file, first=first, second=second, scores=scores)


# ---- Echo toy triples --------------------------------------------------------------------------
@dataclass(frozen=True)
class EchoTriple:
    id: str
    query: str
    positive: str
    negative: str
    structure: str = ""
    meta: dict[str, object] = field(default_factory=dict)


def load_echo_triples(path: str | Path) -> list[EchoTriple]:
    """``{"triples": [{"id", "q", "s_pos", "s_neg", "structure"?, ...}, ...]}``."""
    file = Path(path)
    if not file.is_file():
        raise EvalDataError(f"{file}: no such file")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise EvalDataError(f"{file}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    rows = data.get("triples") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        raise EvalDataError(f"{file}: expected an object with a non-empty 'triples' list")
    triples = []
    for n, row in enumerate(rows):
        where = f"{file}: triples[{n}]"
        if not isinstance(row, dict):
            raise EvalDataError(f"{where}: expected an object")
        texts = {}
        for key in ("q", "s_pos", "s_neg"):
            value = row.get(key)
            if not isinstance(value, str) or not value.strip():
                raise EvalDataError(f"{where}: field {key!r} is missing or empty")
            texts[key] = value
        triples.append(
            EchoTriple(
                id=str(row.get("id", n)),
                query=texts["q"],
                positive=texts["s_pos"],
                negative=texts["s_neg"],
                structure=str(row.get("structure", "")),
                meta={k: v for k, v in row.items() if k not in {"id", "q", "s_pos", "s_neg"}},
            )
        )
    return triples

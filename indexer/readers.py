"""Corpus readers: JSONL, BEIR folders, CSV/TSV and folders of .txt/.md files.

Every record becomes a :class:`Document`. A bad record (invalid JSON, missing id or text, a
duplicate id, a file that is not UTF-8...) is a :class:`BadRecordError` naming ``file:line``. With
``on_error="fail"`` the first one is raised; with ``on_error="skip"`` each is reported on stderr,
kept in ``reader.errors`` and skipped - never silently dropped. A document longer than
``EMBER_MAX_DOC_CHARS`` (title + text) is a bad record too: one huge document would otherwise
become thousands of chunks.

Formats (``fmt="auto"`` picks by path):

* ``jsonl``: one object per line: ``id`` (or ``_id``), ``text``, optional ``title``, ``source``,
  ``metadata`` (object); any other top-level field is metadata too.
* ``beir``: a folder with ``corpus.jsonl`` (``_id``, ``title``, ``text``, ``metadata``).
* ``csv``: a header row with ``id`` (or ``_id``) and ``text`` columns, optional ``title`` and
  ``source``; other columns are metadata (strings). ``.tsv`` files are tab-separated.
* ``dir``: every ``.txt``/``.md`` file below the folder; id and source = the relative path, title =
  the first Markdown heading (``.md``) or the file name.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from encoders.errors import EmberError

FORMATS = ("auto", "jsonl", "beir", "csv", "dir")
ON_ERROR = ("fail", "skip")
RESERVED = ("doc_id", "chunk_index", "text", "title", "source")
TEXT_SUFFIXES = (".txt", ".md", ".markdown")


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    title: str = ""
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


class BadRecordError(EmberError, ValueError):
    """A corpus record that cannot be indexed; ``str()`` is ``file:line: message``."""

    status = 422

    def __init__(self, file: str | Path, line: int, message: str) -> None:
        self.file = str(file)
        self.line = line
        self.message = message
        super().__init__(f"{self.file}:{line}: {message}")


class CorpusReader(Iterator[Document]):
    """Iterates the documents of a corpus; ``errors`` collects the records skipped so far."""

    def __init__(
        self,
        path: str | Path,
        fmt: str = "auto",
        on_error: str = "fail",
        report: Callable[[str], None] | None = None,
        max_doc_chars: int | Literal["settings"] | None = "settings",
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
        self.path = Path(path)
        self.fmt = detect_format(self.path) if fmt == "auto" else fmt
        if self.fmt not in FORMATS:
            raise ValueError(f"unknown corpus format {fmt!r} (use one of {', '.join(FORMATS)})")
        self.on_error = on_error
        self.max_doc_chars = doc_chars_limit() if max_doc_chars == "settings" else max_doc_chars
        self.errors: list[BadRecordError] = []
        self._report = report or (lambda msg: print(msg, file=sys.stderr))
        self._seen: set[str] = set()
        self._it = self._documents()

    def __next__(self) -> Document:
        return next(self._it)

    def _documents(self) -> Iterator[Document]:
        readers = {"jsonl": _read_jsonl, "beir": _read_beir, "csv": _read_csv, "dir": _read_dir}
        for file, line, item in readers[self.fmt](self.path):
            if isinstance(item, Document) and item.id in self._seen:
                item = BadRecordError(file, line, f"duplicate document id {item.id!r}")
            elif isinstance(item, Document):
                item = check_size(item, file, line, self.max_doc_chars)
            if isinstance(item, BadRecordError):
                if self.on_error == "fail":
                    raise item
                self.errors.append(item)
                self._report(f"warning: skipped {item}")
                continue
            self._seen.add(item.id)
            yield item


def doc_chars_limit() -> int | None:
    """``EMBER_MAX_DOC_CHARS`` (read now, not cached: the CLI and tests set it per run)."""
    from indexer.settings import Settings

    return Settings().max_doc_chars


def check_size(
    doc: Document, file: str | Path, line: int, max_chars: int | None
) -> Document | BadRecordError:
    size = len(doc.title) + len(doc.text)
    if max_chars is not None and size > max_chars:
        return BadRecordError(
            file, line, f"document {doc.id!r}: {size} characters, more than the limit of "
            f"{max_chars} (EMBER_MAX_DOC_CHARS)",
        )  # fmt: skip
    return doc


def read_corpus(path: str | Path, fmt: str = "auto", on_error: str = "fail") -> CorpusReader:
    """Documents of the corpus at ``path`` (see the module docstring for formats)."""
    return CorpusReader(path, fmt, on_error)


def detect_format(path: Path) -> str:
    if path.is_dir():
        return "beir" if (path / "corpus.jsonl").is_file() else "dir"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    raise ValueError(
        f"{path}: cannot tell the corpus format from the name; pass --format "
        "(jsonl, beir, csv or dir)"
    )


# ---- record validation ------------------------------------------------------------------------
Item = tuple[Path, int, Document | BadRecordError]


def _doc_id(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    return None


def make_document(
    record: dict[str, Any], file: Path, line: int, default_source: str
) -> Document | BadRecordError:
    raw_id = record.get("id", record.get("_id"))
    doc_id = _doc_id(raw_id)
    if doc_id is None:
        return BadRecordError(file, line, "missing or empty 'id' (or '_id')")
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        return BadRecordError(file, line, f"document {doc_id!r}: 'text' is missing or empty")
    title = record.get("title") or ""
    if not isinstance(title, str):
        return BadRecordError(file, line, f"document {doc_id!r}: 'title' must be a string")
    source = record.get("source") or default_source
    if not isinstance(source, str):
        return BadRecordError(file, line, f"document {doc_id!r}: 'source' must be a string")
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict):
        return BadRecordError(file, line, f"document {doc_id!r}: 'metadata' must be an object")
    extra = {
        k: v
        for k, v in record.items()
        if k not in ("id", "_id", "text", "title", "source", "metadata")
    }
    metadata = {**extra, **metadata}
    clash = [k for k in metadata if k in RESERVED]
    if clash:
        return BadRecordError(
            file, line, f"document {doc_id!r}: metadata field {clash[0]!r} is reserved"
        )
    doc = Document(id=doc_id, text=text, title=title, source=source, metadata=metadata)
    return doc


def _read_jsonl(path: Path, source: str | None = None) -> Iterator[Item]:
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; use --format beir or dir")
    default_source = source if source is not None else path.name
    with path.open("rb") as stream:
        for line_no, raw in enumerate(stream, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield (
                    path,
                    line_no,
                    BadRecordError(path, line_no, f"not valid UTF-8 ({exc.reason})"),
                )
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield (
                    path,
                    line_no,
                    BadRecordError(path, line_no, f"invalid JSON ({exc.msg}, column {exc.colno})"),
                )
                continue
            if not isinstance(record, dict):
                yield path, line_no, BadRecordError(path, line_no, "expected a JSON object")
                continue
            yield path, line_no, make_document(record, path, line_no, default_source)


def _read_beir(path: Path) -> Iterator[Item]:
    corpus = path / "corpus.jsonl" if path.is_dir() else path
    if not corpus.is_file():
        raise FileNotFoundError(f"{path}: no corpus.jsonl (not a BEIR folder)")
    yield from _read_jsonl(corpus, source=path.name if path.is_dir() else corpus.name)


def _read_csv(path: Path) -> Iterator[Item]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    csv.field_size_limit(1 << 30)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with path.open(encoding="utf-8", newline="") as stream:
            reader = csv.DictReader(stream, delimiter=delimiter)
            header = reader.fieldnames or []
            if not header:
                raise ValueError(f"{path}:1: empty file (expected a header row)")
            if "text" not in header or not ({"id", "_id"} & set(header)):
                raise ValueError(
                    f"{path}:1: the header needs 'id' (or '_id') and 'text' columns, got {header}"
                )
            last_line = 1
            for row in reader:
                line_no = last_line + 1  # first physical line of this record
                last_line = reader.line_num
                if None in row:
                    yield (
                        path,
                        line_no,
                        BadRecordError(path, line_no, "more fields than the header"),
                    )
                    continue
                if any(v is None for v in row.values()):
                    yield (
                        path,
                        line_no,
                        BadRecordError(path, line_no, "fewer fields than the header"),
                    )
                    continue
                yield path, line_no, make_document(dict(row), path, line_no, path.name)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not valid UTF-8 ({exc.reason})") from None
    except csv.Error as exc:
        raise ValueError(f"{path}: malformed CSV ({exc})") from None


def _title_of(text: str, file: Path) -> str:
    if file.suffix.lower() in (".md", ".markdown"):
        for line in text.splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip()
    return file.stem


def _read_dir(path: Path) -> Iterator[Item]:
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    if not files:
        raise ValueError(f"{path}: no .txt or .md files found")
    for file in files:
        rel = file.relative_to(path).as_posix()
        data = file.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            yield file, line, BadRecordError(file, line, f"not valid UTF-8 ({exc.reason})")
            continue
        if not text.strip():
            yield file, 1, BadRecordError(file, 1, "empty file")
            continue
        yield file, 1, Document(id=rel, text=text, title=_title_of(text, file), source=rel)


# ---- BEIR queries and relevance judgements ----------------------------------------------------
def read_queries(path: str | Path) -> dict[str, str]:
    """BEIR ``queries.jsonl`` (``_id``, ``text``) -> {query id: text}; a folder means its
    ``queries.jsonl``. Bad lines raise :class:`BadRecordError`."""
    path = Path(path)
    if path.is_dir():
        path = path / "queries.jsonl"
    queries: dict[str, str] = {}
    for file, line, item in _read_jsonl(path):
        if isinstance(item, BadRecordError):
            raise item
        if item.id in queries:
            raise BadRecordError(file, line, f"duplicate query id {item.id!r}")
        queries[item.id] = item.text
    return queries


def read_qrels(path: str | Path, split: str = "test") -> dict[str, dict[str, int]]:
    """BEIR ``qrels/<split>.tsv`` (``query-id``, ``corpus-id``, ``score`` with a header) ->
    {query id: {doc id: grade}}; a folder means its ``qrels/<split>.tsv``."""
    path = Path(path)
    if path.is_dir():
        path = path / "qrels" / f"{split}.tsv"
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as stream:
        for line_no, raw in enumerate(stream, start=1):
            fields = raw.rstrip("\n").split("\t")
            if line_no == 1 and fields[:2] == ["query-id", "corpus-id"]:
                continue
            if not raw.strip():
                continue
            if len(fields) != 3:
                raise BadRecordError(
                    path, line_no, f"expected 3 tab-separated fields, got {len(fields)}"
                )
            try:
                grade = int(fields[2])
            except ValueError:
                raise BadRecordError(
                    path, line_no, f"score {fields[2]!r} is not an integer"
                ) from None
            qrels.setdefault(fields[0], {})[fields[1]] = grade
    return qrels

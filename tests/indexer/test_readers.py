"""Corpus readers: every format, and bad records reported with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.readers import BadRecordError, Document, read_corpus
from tests.indexer.conftest import write_jsonl


def test_jsonl_fields_and_metadata(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"id": "a", "text": "alpha", "title": "A", "year": 2001, "metadata": {"k": "v"}},
            "",
            {"_id": 7, "text": "beta", "source": "web"},
        ],
    )
    docs = list(read_corpus(path))
    assert docs == [
        Document("a", "alpha", "A", "c.jsonl", {"year": 2001, "k": "v"}),
        Document("7", "beta", "", "web", {}),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"text": "no id"}', "missing or empty 'id'"),
        ('{"id": "x", "text": "   "}', "'text' is missing or empty"),
        ('{"id": "x", "text": "t", "metadata": {"doc_id": 1}}', "'doc_id' is reserved"),
        ('{"id": "x", "text": "t", "metadata": [1]}', "'metadata' must be an object"),
    ],
)
def test_jsonl_bad_record_fails_with_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": "ok", "text": "fine"}, line])
    with pytest.raises(BadRecordError) as info:
        list(read_corpus(path))
    assert str(info.value).startswith(f"{path}:2: ")
    assert message in str(info.value)
    assert info.value.line == 2


def test_skip_reports_each_bad_record_and_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"id": "a", "text": "one"},
            "{broken",
            {"id": "a", "text": "duplicate id"},
            {"id": "b", "text": "two"},
        ],
    )
    reader = read_corpus(path, on_error="skip")
    assert [d.id for d in reader] == ["a", "b"]
    assert [(e.line, e.message.split(" (")[0]) for e in reader.errors] == [
        (2, "invalid JSON"),
        (3, "duplicate document id 'a'"),
    ]
    err = capsys.readouterr().err.splitlines()
    assert err == [f"warning: skipped {e}" for e in reader.errors]


def test_invalid_utf8_line_is_a_bad_record(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "\xff\xfe"}\n')
    reader = read_corpus(path, on_error="skip")
    assert [d.id for d in reader] == ["a"]
    assert reader.errors[0].line == 2 and "UTF-8" in reader.errors[0].message


def test_beir_folder(tmp_path: Path) -> None:
    folder = tmp_path / "scifact"
    folder.mkdir()
    write_jsonl(
        folder / "corpus.jsonl",
        [{"_id": "10", "title": "T", "text": "body", "metadata": {}}],
    )
    docs = list(read_corpus(folder))
    assert docs == [Document("10", "body", "T", "scifact", {})]


def test_beir_real_scifact_mini(shared_data: Path) -> None:
    docs = list(read_corpus(shared_data / "beir" / "scifact-mini"))
    assert len(docs) == 500
    assert len({d.id for d in docs}) == 500
    assert all(d.text.strip() and d.title for d in docs)


def test_csv_and_tsv(tmp_path: Path) -> None:
    csv_path = tmp_path / "c.csv"
    csv_path.write_text(
        'id,title,text,lang\n1,One,"first, with comma",en\n2,Two,"multi\nline",de\n'
    )
    docs = list(read_corpus(csv_path))
    assert [(d.id, d.text, d.metadata) for d in docs] == [
        ("1", "first, with comma", {"lang": "en"}),
        ("2", "multi\nline", {"lang": "de"}),
    ]
    tsv = tmp_path / "c.tsv"
    tsv.write_text("_id\ttext\nx\thello\n")
    assert [d.id for d in read_corpus(tsv)] == ["x"]


def test_csv_bad_rows_name_their_line(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text('id,text\n1,"two\nlines"\n2,a,extra\n,empty id\n3,\n4,fine\n')
    reader = read_corpus(path, on_error="skip")
    assert [d.id for d in reader] == ["1", "4"]
    assert [(e.line, e.message) for e in reader.errors] == [
        (4, "more fields than the header"),
        (5, "missing or empty 'id' (or '_id')"),
        (6, "document '3': 'text' is missing or empty"),
    ]


def test_csv_without_required_columns(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("name,body\na,b\n")
    with pytest.raises(ValueError, match=r"c\.csv:1: the header needs 'id'"):
        list(read_corpus(path))


def test_folder_of_text_files(tmp_path: Path) -> None:
    root = tmp_path / "notes"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("plain text")
    (root / "sub" / "b.md").write_text("intro\n# The Heading\nbody")
    (root / "ignored.bin").write_bytes(b"\x00")
    (root / "empty.md").write_text("  \n")
    (root / "latin1.txt").write_bytes(b"line one\ncaf\xe9\n")
    reader = read_corpus(root, on_error="skip")
    docs = list(reader)
    assert [(d.id, d.title, d.source) for d in docs] == [
        ("a.txt", "a", "a.txt"),
        ("sub/b.md", "The Heading", "sub/b.md"),
    ]
    assert sorted((Path(e.file).name, e.line) for e in reader.errors) == [
        ("empty.md", 1),
        ("latin1.txt", 2),
    ]


def test_unknown_format_and_missing_path(tmp_path: Path) -> None:
    odd = tmp_path / "corpus.xml"
    odd.write_text("<x/>")
    with pytest.raises(ValueError, match="--format"):
        read_corpus(odd)
    with pytest.raises(FileNotFoundError):
        read_corpus(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="on_error"):
        read_corpus(odd, fmt="jsonl", on_error="ignore")


def test_documents_over_the_size_limit_are_bad_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [{"id": "ok", "text": "x" * 10}, {"id": "huge", "title": "T", "text": "x" * 10}],
    )
    monkeypatch.setenv("EMBER_MAX_DOC_CHARS", "10")  # title + text: "huge" has 11
    with pytest.raises(BadRecordError) as info:
        list(read_corpus(path))
    (line,) = str(info.value).splitlines()
    assert line == (
        f"{path}:2: document 'huge': 11 characters, more than the limit of 10 (EMBER_MAX_DOC_CHARS)"
    )
    reader = read_corpus(path, on_error="skip")
    assert [d.id for d in reader] == ["ok"] and len(reader.errors) == 1
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "big.md").write_text("y" * 11)  # + its title, the file name "big"
    with pytest.raises(BadRecordError, match=r"document 'big\.md': 14 characters"):
        list(read_corpus(folder))
    monkeypatch.delenv("EMBER_MAX_DOC_CHARS")
    assert len(list(read_corpus(path))) == 2  # the default limit is far above

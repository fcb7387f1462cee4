"""`ember index / search / collections / demo` through click, and one real subprocess."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ember.cli import cli
from tests.indexer.conftest import corpus_records, write_jsonl


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"EMBER_DATA_DIR": str(tmp_path / "data"), "EMBER_EMBEDDED_BACKEND": "edge"}


def run(args: list[str], env: dict[str, str]) -> Any:
    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    return result


def one_line_error(result: Any, *needles: str) -> None:
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_index_search_collections(tiny_folder: Path, tmp_path: Path, env: dict[str, str]) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", corpus_records(12))
    enc = ["--encoder", str(tiny_folder)]
    res = run(["index", str(corpus), "-c", "docs", "--chunk-tokens", "16", "--overlap", "4",
               "--no-progress", *enc], env)  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert "indexed 12 documents" in res.stderr and "alias 'docs'" in res.stderr

    res = run(["search", "vitamin D", "-c", "docs", "--task", "scifact", "-k", "3", *enc], env)
    assert res.exit_code == 0, res.stderr
    ranked = [line for line in res.stdout.splitlines() if line[:5].strip()]  # not passages
    assert [line.split(".")[0].strip() for line in ranked] == ["1", "2", "3"]

    res = run(["search", "fox", "-c", "docs", "--json", "--filter", '{"lang": "de"}', *enc], env)
    hits = [json.loads(line) for line in res.stdout.splitlines()]
    assert hits and all(h["payload"]["lang"] == "de" for h in hits)

    res = run(["search", "--list-tasks"], env)
    assert res.exit_code == 0 and res.stdout.startswith("web_search ")

    res = run(["collections", "--json"], env)
    [info] = json.loads(res.stdout)
    assert info["aliases"] == ["docs"] and info["vectors"] == {"dense": 32}
    assert info["points"] > 12


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["search", "q", "-c", "nope"], ["--collection", "'nope' not found"]),
        (["search", "q", "--task", "nope"], ["--task", "unknown task 'nope'"]),
        (["search", "q", "--filter", "{bad"], ["--filter", "invalid JSON"]),
        (["search", "q", "--filter", '{"y": {"near": 1}}'], ["--filter", "unknown operator"]),
        (["search", "  "], ["QUERY"]),
        (["index", "/no/such/path", "-c", "x"], ["PATH", "no such file"]),
        (["index", ".", "-c", "a__b"], ["--collection", "reserved"]),
        (["index", ".", "-c", "ok", "--chunk-tokens", "16", "--overlap", "16"], ["--overlap"]),
        (["index", ".", "-c", "ok", "--payload-index", "year"], ["--payload-index", "FIELD:TYPE"]),
        (["index", ".", "-c", "ok", "--payload-index", "y:big"], ["--payload-index", "'big'"]),
    ],
)
def test_bad_input_is_one_line(
    args: list[str], needles: list[str], env: dict[str, str], tiny_folder: Path
) -> None:
    one_line_error(run([*args, "--encoder", str(tiny_folder)], env), *needles)


def test_bad_record_fails_naming_file_and_line(
    tiny_folder: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", [*corpus_records(3), '{"id": "x", "text": ""}'])
    res = run(["index", str(corpus), "-c", "docs", "--encoder", str(tiny_folder)], env)
    one_line_error(res, f"{corpus}:4:", "'text' is missing", "--on-error skip")
    assert run(["collections", "--json"], env).stdout.strip() == "[]"  # nothing written

    res = run(["index", str(corpus), "-c", "docs", "--on-error", "skip", "--no-progress",
               "--encoder", str(tiny_folder)], env)  # fmt: skip
    assert res.exit_code == 0
    assert f"warning: skipped {corpus}:4:" in res.stderr
    assert "skipped 1 bad records" in res.stderr


def test_real_entry_point_exit_code(tmp_path: Path) -> None:
    """The console entry point: a missing corpus is exit 1 and one line, no traceback."""
    res = subprocess.run(
        [sys.executable, "-m", "ember", "index", str(tmp_path / "missing"), "-c", "x"],
        capture_output=True,
        text=True,
        timeout=300,
        env={"EMBER_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        f"Error: PATH: no such file or folder: {tmp_path}/missing"
    ]


def test_demo_on_bundled_corpus(tiny_folder: Path, env: dict[str, str]) -> None:
    from ember.commands.demo import BUNDLED_SCIFACT

    args = ["demo", "--corpus", str(BUNDLED_SCIFACT), "--docs", "20", "--no-progress",
            "--encoder", str(tiny_folder)]  # fmt: skip
    first = run(args, env)
    assert first.exit_code == 0, first.stderr
    assert "20 documents" in first.stdout and "index    20 documents ->" in first.stdout
    assert first.stdout.count("\nquery ") == 4
    assert "test queries on this 20-document sample" in first.stdout
    assert re.search(r"timing   model load \d+\.\ds, index \d+\.\ds, search \d+\.\ds", first.stdout)
    again = run(args, env)
    assert "reusing scifact-demo__" in again.stdout
    assert re.search(r"timing   model load \d+\.\ds, index reused, search ", again.stdout)


def test_search_modes_and_old_collections(
    tiny_folder: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    from encoders import load_encoder
    from indexer.settings import Settings
    from indexer.stores import open_store

    corpus = write_jsonl(tmp_path / "c.jsonl", corpus_records(12))
    enc = ["--encoder", str(tiny_folder)]
    res = run(["index", str(corpus), "-c", "docs", "--no-progress", *enc], env)
    assert res.exit_code == 0, res.stderr
    for mode in ("dense", "sparse", "hybrid"):
        res = run(["search", "vitamin", "-c", "docs", "--mode", mode, "--json", "-k", "3", *enc],
                  env)  # fmt: skip
        assert res.exit_code == 0, res.stderr
        assert len(res.stdout.splitlines()) == 3
    res = run(["collections", "--json"], env)
    assert json.loads(res.stdout)[0]["sparse"] == ["bm25"]

    # a collection built before sparse vectors: dense by default, one line for sparse/hybrid
    fp = load_encoder(str(tiny_folder)).fingerprint
    store = open_store(Settings(data_dir=Path(env["EMBER_DATA_DIR"]), embedded_backend="edge"))
    try:
        store.create_collection(f"old__{fp}__v1", {"dense": 32})
        store.switch_alias("old", f"old__{fp}__v1")
    finally:
        store.close()
    res = run(["search", "vitamin", "-c", "old", *enc], env)
    assert res.exit_code == 0, res.stderr
    res = run(["search", "vitamin", "-c", "old", "--mode", "hybrid", *enc], env)
    one_line_error(res, "--mode", "without BM25 sparse vectors", "reindex")


@pytest.mark.parametrize("command", ["index", "encode", "eval"])
def test_an_unknown_encoder_is_one_line_naming_the_option(
    command: str, env: dict[str, str], tmp_path: Path
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", corpus_records(2))
    sts = tmp_path / "sts-test.csv"
    sts.write_text("g\tf\t2012\t1\t5.0\tA man runs.\tA man is running.\n" * 2)
    args = {
        "index": ["index", str(corpus), "-c", "ok"],
        "encode": ["encode", "-i", str(corpus), "--format", "jsonl"],
        "eval": ["eval", "sts", str(sts)],
    }[command]
    one_line_error(
        run([*args, "--encoder", "no-such-preset"], env),
        "--encoder: encoder 'no-such-preset' is not a preset",
    )


def test_dtype_option_is_recorded_and_does_not_split_collections(
    tiny_folder: Path, tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from indexer.settings import Settings
    from indexer.stores import open_store

    monkeypatch.setenv("EMBER_DTYPE", "float32")  # the option writes it; restored after
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path / "cache"))  # int8's ONNX export
    corpus = write_jsonl(tmp_path / "c.jsonl", corpus_records(12))
    enc = ["--encoder", str(tiny_folder)]
    res = run(["index", str(corpus), "-c", "docs", "--no-progress", "--dtype", "int8", *enc], env)
    assert res.exit_code == 0, res.stderr
    # searched in another dtype: same fingerprint, so the same collection serves it
    res = run(["search", "vitamin", "-c", "docs", "--dtype", "bfloat16", "-k", "3", *enc], env)
    assert res.exit_code == 0, res.stderr
    assert len(res.stdout.splitlines()) == 3
    store = open_store(Settings(data_dir=Path(env["EMBER_DATA_DIR"]), embedded_backend="edge"))
    try:
        build = store.collection_meta("docs")["build"]
    finally:
        store.close()
    assert build["dtype"] == "int8" and build["configured_dtype"] == "float32"
    assert build["int8_backend"] == "onnxruntime"  # auto, where onnxruntime is installed
    res = run(["search", "vitamin", "-c", "docs", "--dtype", "fp8", *enc], env)
    assert res.exit_code != 0 and "'fp8' is not one of" in res.stderr


def test_search_pages_documents_or_chunks(
    tiny_folder: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", corpus_records(12))
    enc = ["--encoder", str(tiny_folder)]
    res = run(["index", str(corpus), "-c", "docs", "--chunk-tokens", "8", "--overlap", "2",
               "--no-progress", *enc], env)  # fmt: skip
    assert res.exit_code == 0, res.stderr

    def hits(*args: str) -> list[dict[str, Any]]:
        res = run(["search", "vitamin D infection", "-c", "docs", "--json", *args, *enc], env)
        assert res.exit_code == 0, res.stderr
        return [json.loads(line) for line in res.stdout.splitlines()]

    docs = hits("-k", "8")
    ids = [h["payload"]["doc_id"] for h in docs]
    assert len(ids) == len(set(ids)) == 8  # one hit per document
    for h in docs:
        assert 1 <= len(h["passages"]) <= 3 and h["passages"][0]["id"] == h["id"]
        assert h["passages"][0]["score"] == h["score"]
        assert [p["score"] for p in h["passages"]] == sorted(
            (p["score"] for p in h["passages"]), reverse=True
        )
        assert all(p["text"] for p in h["passages"])
    paged = hits("-k", "3") + hits("-k", "3", "--offset", "3") + hits("-k", "2", "--offset", "6")
    assert [h["id"] for h in paged] == [h["id"] for h in docs]

    chunks = hits("-k", "8", "--chunks")
    assert "passages" not in chunks[0]
    assert len({h["payload"]["doc_id"] for h in chunks}) < 8  # chunks of one document repeat
    assert [h["id"] for h in hits("-k", "4", "--chunks", "--offset", "4")] == [
        h["id"] for h in chunks[4:]
    ]

    text = run(["search", "vitamin D infection", "-c", "docs", "-k", "2", "--offset", "5", *enc],
               env).stdout.splitlines()  # fmt: skip
    assert text[0].lstrip().startswith("6.")  # ranks count from the offset

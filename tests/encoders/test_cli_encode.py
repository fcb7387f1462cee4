"""`ember encode` end to end through the real console entry point (tiny model folder)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from encoders.testing import tiny_model_folder


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_folder(tmp_path_factory.mktemp("cli") / "m", "llama")


def ember(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ember", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_lines_to_npy(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "v.npy"
    res = ember(
        "encode", "--encoder", str(model), "-o", str(out), "--no-progress", stdin="a b\nc d\n\n"
    )
    assert res.returncode == 0, res.stderr
    vectors = np.load(out)
    assert vectors.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_jsonl_to_jsonl_keeps_ids(model: Path) -> None:
    records = "\n".join(json.dumps({"id": f"d{i}", "body": f"text {i}"}) for i in range(3))
    res = ember(
        "encode",
        "--encoder",
        str(model),
        "--format",
        "jsonl",
        "--field",
        "body",
        "--instruction",
        "Retrieve:",
        "--no-progress",
        stdin=records,
    )
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["d0", "d1", "d2"]
    assert len(rows[0]["embedding"]) == 32


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ('{"text": "ok"}\n{"text": 3}\n', "line 2: field 'text'"),
        ('{"text": "ok"}\nnot json\n', "line 2: invalid JSON"),
        ("", "no input texts"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(model: Path, stdin: str, message: str) -> None:
    res = ember("encode", "--encoder", str(model), "--format", "jsonl", stdin=stdin)
    assert res.returncode != 0
    assert message in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_missing_encoder_is_one_line(tmp_path: Path) -> None:
    res = ember("encode", "--encoder", str(tmp_path / "nothing"), stdin="x\n")
    assert res.returncode == 1
    assert res.stderr.startswith("Error: --encoder: encoder") and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_no_partial_npy_on_failure(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "v.npy"
    res = ember(
        "encode", "--encoder", str(model), "--format", "jsonl", "-o", str(out), stdin="{}\n"
    )
    assert res.returncode != 0 and not out.exists()

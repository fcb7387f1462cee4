"""`ember train`: one run through the console entry point, one-line errors in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ember.cli import cli


def test_train_simcse_writes_an_encoder(bi_encoder: Path, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli-simcse"
    res = subprocess.run(
        [
            sys.executable, "-m", "ember", "train", "simcse", "--from", str(bi_encoder),
            "--out", str(out), "--data", str(data_dir / "texts.jsonl"), "--max-steps", "2",
            "--batch-size", "4", "--lora-r", "2", "--no-progress", "--threads", "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(out.resolve())
    config = json.loads((out / "encoder_config.json").read_text())
    assert config["adapters"] == [{"path": "adapter", "merged": True}]
    args = json.loads((out / "train_args.json").read_text())
    assert args["params"]["lora_r"] == 2 and args["params"]["temperature"] == 0.05


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "no-such-encoder"], "error: encoder 'no-such-encoder' is not a preset"),
        (["--mask-prob", "1.5"], "error: mntp params: mask_prob: Input should be less than 1"),
        (["--data", "BAD"], "bad.jsonl:2: invalid JSON"),
        (["--data", "MISSING"], "error: no such data file"),
        (["--target-modules", "c_attn"], "error: none of the LoRA target modules"),
    ],
)
def test_errors_are_one_line(
    args: list[str], message: str, bi_encoder: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{oops\n')
    fixed = {"BAD": str(bad), "MISSING": str(tmp_path / "nope.txt")}
    args = [fixed.get(a, a) for a in args]
    base = ["--from", str(bi_encoder)] if "--from" not in args else []
    res = CliRunner().invoke(
        cli, ["train", "mntp", *base, "--out", str(tmp_path / "o"), "--no-progress", *args]
    )
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert message in lines[0]


def test_help_lists_the_stages_and_their_defaults() -> None:
    res = CliRunner().invoke(cli, ["train", "--help"])
    assert res.exit_code == 0
    for stage in ("mntp", "simcse", "supervised", "llara"):
        assert stage in res.output
    res = CliRunner().invoke(cli, ["train", "supervised", "--help"])
    assert "--chunk-size" in res.output and "[default: 8]" in res.output

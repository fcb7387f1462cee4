"""One STS-B TSV reader behind training (``read_scored_pairs``) and evaluation (``load_sts``):
the same file gives both the same pairs; each keeps its own policy for empty sentences."""

from __future__ import annotations

from pathlib import Path

import pytest

from encoders.training.pairs import read_scored_pairs
from encoders.training.records import DataError
from encoders.tsv import iter_sts_tsv
from indexer.evaluation.data import EvalDataError, load_sts

ROWS = (
    'main\tMSRvid\t2012\t0001\t5.000\ta plane is taking off .\tan "air plane" is taking off .\r\n'
    "\n"
    "main\tMSRvid\t2012\t0004\t3.800\ta man plays a flute .\ta man plays a flute .\tsrc\tsrc\r\n"
)


def test_training_and_evaluation_read_the_same_pairs(tmp_path: Path) -> None:
    file = tmp_path / "sts-dev.csv"
    file.write_text(ROWS, newline="")
    rows = [(a, b, s) for _, a, b, s in iter_sts_tsv(file)]
    assert rows[0] == ("a plane is taking off .", 'an "air plane" is taking off .', 5.0)
    assert len(rows) == 2  # the blank line skipped, extra source columns ignored, CRLF stripped
    assert read_scored_pairs(file, None).pairs == rows
    sts = load_sts(file)
    assert list(zip(sts.first, sts.second, sts.scores, strict=True)) == rows


def test_bad_lines_name_file_and_line_for_both(tmp_path: Path) -> None:
    file = tmp_path / "sts-dev.csv"
    file.write_text("main\tx\t2012\t1\tfive\ta\tb\n")
    with pytest.raises(DataError, match=r"sts-dev.csv:1: score 'five' is not a number"):
        read_scored_pairs(file, None)
    with pytest.raises(EvalDataError, match=r"sts-dev.csv:1: score 'five' is not a number"):
        load_sts(file)
    file.write_text("main\tx\t2012\t1\t4.0\ta\n")
    with pytest.raises(EvalDataError, match="at least 7 tab-separated"):
        load_sts(file)

"""``ember moee upcycle`` and ``ember moee fit-stats`` on a tiny Llama."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

from ember.cli import cli
from encoders import Encoder
from encoders.moee import MoeeEncoder
from encoders.testing import tiny_model_folder


def test_upcycle_then_fit_stats_gives_a_ready_moee_encoder(tmp_path: Path) -> None:
    dense = tiny_model_folder(tmp_path / "llama", "llama")
    runner = CliRunner()
    moe = tmp_path / "moe-UNTRAINED"
    result = runner.invoke(
        cli, ["moee", "upcycle", "--source", str(dense), "--out", str(moe), "--experts", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "UNTRAINED" in result.output and (moe / "config.json").is_file()

    sample = tmp_path / "sample.txt"
    sample.write_text("\n".join(f"sentence number {i} about cells and genes" for i in range(9)))
    out = tmp_path / "enc"
    result = runner.invoke(
        cli,
        [
            *("moee", "fit-stats", "--base", str(moe), "--sample", str(sample)),
            *("--limit", "5", "--out", str(out), "--rw-weight", "0.5", "--no-progress"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "fitted on 5 texts: hs 32 + rw 6 dims" in result.output
    enc = Encoder.load(out)
    assert isinstance(enc, MoeeEncoder)
    assert enc.settings.rw_weight == 0.5 and enc.settings.stats is not None
    vectors = enc.encode(["cells divide", "genes"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    args = ["moee", "upcycle", "--source", str(dense), "--out", str(moe), "--top-k", "5"]
    bad = runner.invoke(cli, args)  # 4 experts by default: top-5 is impossible
    assert bad.exit_code != 0 and "top_k" in bad.output

"""bench/quality.py report plumbing: the RESULTS.md section is replaced in place."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

from tests.scripts import load_script


def load_bench() -> ModuleType:
    return load_script("bench_quality", "bench/quality.py")


def test_section_replaced_and_rest_kept(tmp_path: Path) -> None:
    q = load_bench()
    data = {
        "updated": "now",
        "results": {
            "BM25": {"scifact": {"ndcg@10": 0.6762, "recall@100": 0.9127, "mrr@10": 0.6413}},
            "X": {"sts": {"spearman": 0.5}, "echo": {"prefix_accuracy": 0.5}},
        },
    }
    md = tmp_path / "RESULTS.md"
    md.write_text("# Benchmarks\n\n## Latency\nkeep me\n")
    q.update_markdown(md, q.render(data, ["BM25", "X"], ["MNTP (x: not built yet)"]))
    q.update_markdown(md, q.render(data, ["BM25", "X"], []))  # second run replaces, not appends
    text = md.read_text()
    assert text.count(q.BEGIN) == 1 and "keep me" in text
    assert "| BM25 | 67.6 | 91.3 | 64.1 | — | — | — | — | — |" in text
    assert "| X | — | — | — | — | — | — | 50.0 | 50 |" in text
    assert "not built yet" not in text


def test_extra_rows_skip_missing_folders(tmp_path: Path) -> None:
    q = load_bench()
    rows_file = tmp_path / "rows.json"
    built = tmp_path / "built"
    built.mkdir()
    (built / "encoder_config.json").write_text("{}")
    training = tmp_path / "training"  # a run in progress: checkpoints, no encoder yet
    (training / "checkpoints").mkdir(parents=True)
    entries = [
        {"label": "A", "encoder": str(built)},
        {"label": "B", "encoder": "missing/x"},
        {"label": "D", "encoder": str(training)},
    ]
    rows_file.write_text(json.dumps({"rows": entries}))
    rows, skipped = q.extra_rows(["C=minilm"], rows_file)
    assert [r.label for r in rows] == ["A", "C"]
    assert [s[0] for s in skipped] == ["B", "D"]


def test_bfloat16_numbers_are_marked(tmp_path: Path) -> None:
    q = load_bench()
    data = {
        "results": {
            "F": {"scifact": {"ndcg@10": 0.5, "recall@100": 0.9, "mrr@10": 0.4},
                  "scifact-mini": {"ndcg@10": 0.6, "recall@100": 1.0, "mrr@10": 0.5,
                                   "dtype": "float32"}},
            "H": {"scifact": {"ndcg@10": 0.5, "recall@100": 0.9, "mrr@10": 0.4,
                              "dtype": "bfloat16"}},
        }
    }  # fmt: skip
    text = q.render(data, ["F", "H"], [])
    assert "| F | 50.0 | 90.0 | 40.0 | 60.0 | 100.0 | 50.0 | — | — |" in text
    assert "| H | 50.0ᵇ | 90.0ᵇ | 40.0ᵇ | — | — | — | — | — |" in text
    assert "ᵇ: encoded in bfloat16" in text
    assert "ᵇ: encoded" not in q.render({"results": {"F": data["results"]["F"]}}, ["F"], [])


def test_save_merges_rows_from_separate_runs(tmp_path: Path) -> None:
    q = load_bench()
    out, md = tmp_path / "quality.json", tmp_path / "RESULTS.md"
    q.save(out, md, {"A": {"sts": {"spearman": 0.1}}}, None, ["A", "B"], [])
    q.save(out, md, {"B": {"sts": {"spearman": 0.2}}}, "a note", ["B"], [])
    q.save(out, md, {"A": {"echo": {"prefix_accuracy": 0.5}}}, None, ["A", "B"], [])
    data = json.loads(out.read_text())
    assert data["results"] == {
        "A": {"sts": {"spearman": 0.1}, "echo": {"prefix_accuracy": 0.5}},
        "B": {"sts": {"spearman": 0.2}},
    }
    text = md.read_text()
    assert "| A |" in text and "| B |" in text and "a note" in text

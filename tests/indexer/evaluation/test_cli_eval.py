"""``ember eval beir | sts | echo`` through the click group: output and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ember.cli import cli
from encoders.config import EncoderConfig
from encoders.testing import tiny_model_folder
from indexer.evaluation.hybrid import SCALES, WEIGHTS
from tests.indexer.evaluation.test_data import GOOD_CORPUS, GOOD_QRELS, GOOD_QUERIES, write_beir


@pytest.fixture(scope="module")
def encoders_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cli-eval")
    base = tiny_model_folder(root / "base", "llama")
    out = {}
    for attention in ("causal", "bidirectional"):
        EncoderConfig(name=f"tiny-{attention}", base_model=str(base), attention=attention).save(
            root / attention
        )
        out[attention] = str(root / attention)
    return out


def run(*args: str) -> tuple[int, str]:
    """Exit code and stdout (progress bars and errors go to stderr; errors are checked through
    :func:`run_err`)."""
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.stdout if res.exit_code == 0 else res.output


def test_beir_bm25(tmp_path: Path) -> None:
    root = write_beir(tmp_path / "toy", GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS)
    code, out = run("eval", "beir", str(root), "--bm25", "--json")
    assert code == 0, out
    result = json.loads(out)
    assert result["system"] == "bm25" and result["queries"] == 2
    # q1 "vitamin" finds d1 first; q2 "cats" finds d2 first but d9 (judged) is not in the corpus
    assert result["mrr@10"] == 1.0 and result["recall@100"] == pytest.approx(0.75)


def test_beir_encoder_with_cache(tmp_path: Path, encoders_dir: dict[str, str]) -> None:
    root = write_beir(tmp_path / "toy", GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS)
    args = ["eval", "beir", str(root), "--encoder", encoders_dir["causal"], "--no-progress"]
    args += ["--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / "r.json")]
    code, out = run(*args)
    assert code == 0, out
    assert "nDCG@10" in out and "warning: 1 judged documents are not in the corpus" in out
    first = json.loads((tmp_path / "r.json").read_text())
    assert first["instruction"]  # decoder model: the web_search instruction (toy is not a task)
    assert list((tmp_path / "cache").glob("*/*.npy"))
    code, _ = run(*args)
    assert code == 0 and json.loads((tmp_path / "r.json").read_text()) == first


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["eval", "beir", "/nonexistent/beir"], 1, "not a BEIR folder"),
        (["eval", "beir", "{toy}", "--bm25", "--encoder", "minilm"], 1, "--bm25 takes no"),
        (["eval", "beir", "{toy}", "--bogus"], 2, "No such option"),
        (["eval", "sts", "/nonexistent/sts.csv"], 1, "no such file or folder"),
        (["eval", "echo", "/nonexistent/triples.json"], 1, "no such file"),
        (["eval", "beir", "{toy}", "--task", "nope", "--encoder", "{causal}"], 1, "unknown task"),
    ],
)
def test_bad_input_exit_codes(
    tmp_path: Path, encoders_dir: dict[str, str], args: list[str], code: int, message: str
) -> None:
    toy = write_beir(tmp_path / "toy", GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS)
    args = [a.format(toy=toy, causal=encoders_dir["causal"]) for a in args]
    got, out = run(*args)
    assert got == code, out
    assert message in out


def test_sts(tmp_path: Path, encoders_dir: dict[str, str]) -> None:
    f = tmp_path / "sts-test.csv"
    f.write_text(
        "g\tf\t2012\t1\t5.0\tA cat sat.\tA cat sat.\n"
        "g\tf\t2012\t2\t1.0\tSearch engines rank.\tVitamin D helps.\n"
        "g\tf\t2012\t3\t3.0\tThe quick fox.\tThe quick brown fox.\n"
    )
    code, out = run("eval", "sts", str(tmp_path), "--encoder", encoders_dir["bidirectional"],
                    "--no-cache", "--no-progress", "--no-instruction", "--json")  # fmt: skip
    assert code == 0, out
    result = json.loads(out)
    assert result["pairs"] == 3 and result["instruction"] is None
    assert -1.0 <= result["spearman"] <= 1.0


def test_echo_causal_is_at_chance(shared_data: Path, encoders_dir: dict[str, str]) -> None:
    code, out = run("eval", "echo", "--encoder", encoders_dir["causal"], "--json")
    assert code == 0, out
    result = json.loads(out)["results"]["mean"]
    assert result["probes"] == 11 and result["ties"] == 11
    assert result["prefix_accuracy"] == 0.5
    code, out = run("eval", "echo", "--encoder", encoders_dir["bidirectional"])
    assert code == 0, out
    assert "prefix test:" in out and "ties 0" in out


def test_beir_sparse_is_qdrant_bm25(tmp_path: Path) -> None:
    root = write_beir(tmp_path / "toy", GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS)
    code, out = run("eval", "beir", str(root), "--mode", "sparse", "--json")
    assert code == 0, out
    result = json.loads(out)
    assert result["system"] == "qdrant-bm25" and result["mode"] == "sparse"
    assert result["mrr@10"] == 1.0  # q1 -> d1, q2 -> d2 (d9 is judged but not in the corpus)


def test_beir_hybrid_and_fit_fusion(tmp_path: Path, encoders_dir: dict[str, str]) -> None:
    root = write_beir(tmp_path / "toy", GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS)
    (root / "qrels" / "train.tsv").write_text(GOOD_QRELS)
    enc = ["--encoder", encoders_dir["bidirectional"], "--no-progress", "--no-cache"]
    code, out = run(
        "eval", "beir", str(root), "--mode", "hybrid", "--fusion", "dbsf", "--json", *enc
    )
    assert code == 0, out
    result = json.loads(out)
    assert result["mode"] == "hybrid" and result["fusion"]["method"] == "dbsf"

    code, out = run("eval", "fit-fusion", str(root), "--split", "test", *enc)
    assert code == 1 and "never on test" in out
    code, out = run("eval", "fit-fusion", str(root), "--json", *enc)
    assert code == 0, out
    fit = json.loads(out)
    assert fit["split"] == "train" and len(fit["table"]) == 2 + len(WEIGHTS) * len(SCALES)
    assert fit["ndcg@10"] == max(row["ndcg@10"] for row in fit["table"])
    # BM25 alone finds both judged documents first: some weighted fusion reaches the maximum
    assert fit["ndcg@10"] == pytest.approx(max(r["ndcg@10"] for r in fit["table"]))


def test_fit_fusion_stores_the_fusion_with_a_collection(
    tmp_path: Path, encoders_dir: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from encoders import load_encoder
    from indexer.pipeline import index_corpus
    from indexer.search import collection_fusion
    from indexer.settings import Settings
    from indexer.stores import open_store

    root = write_beir(tmp_path / "toy", GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS)
    (root / "qrels" / "train.tsv").write_text(GOOD_QRELS)
    settings = Settings(data_dir=tmp_path / "data", embedded_backend="edge")
    store = open_store(settings)
    try:
        index_corpus(root / "corpus.jsonl", "toy", load_encoder(encoders_dir["bidirectional"]),
                     store, progress=False)  # fmt: skip
    finally:
        store.close()
    monkeypatch.setenv("EMBER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EMBER_EMBEDDED_BACKEND", "edge")
    enc = ["--encoder", encoders_dir["bidirectional"], "--no-progress", "--no-cache"]
    code, out = run("eval", "fit-fusion", str(root), "--collection", "toy", "--json", *enc)
    assert code == 0, out
    fit = json.loads(out)
    store = open_store(settings)
    try:
        assert collection_fusion(store, "toy").as_dict() == fit["best"]
    finally:
        store.close()
    code, out = run("eval", "fit-fusion", str(root), "--collection", "nope", *enc)
    assert code == 1 and "'nope' not found" in out


def test_run_file_scores_like_the_evaluation(tmp_path: Path, encoders_dir: dict[str, str]) -> None:
    root = write_beir(tmp_path / "toy", GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS)
    qrels = str(root / "qrels" / "test.tsv")
    for system in (["--bm25"], ["--encoder", encoders_dir["causal"], "--no-cache"]):
        run_file = tmp_path / "run.trec"
        code, out = run("eval", "beir", str(root), *system, "--json",
                        "--run-file", str(run_file))  # fmt: skip
        assert code == 0, out
        evaluated = json.loads(out)
        lines = run_file.read_text().splitlines()
        assert lines and all(len(line.split()) == 6 and line.split()[1] == "Q0" for line in lines)
        code, out = run("eval", "score", str(run_file), qrels, "--json")
        assert code == 0, out
        scored = json.loads(out)
        for key in ("ndcg@10", "recall@100", "mrr@10", "queries"):
            assert scored[key] == evaluated[key], key
        assert scored["answered"] == 2


def test_score_text_output_and_cut_off(tmp_path: Path) -> None:
    (tmp_path / "run.trec").write_text("q1 Q0 d9 1 2.0 t\nq1 Q0 d1 2 1.0 t\n")
    (tmp_path / "qrels.txt").write_text("q1 0 d1 1\nq2 0 d2 1\n")
    code, out = run("eval", "score", str(tmp_path / "run.trec"), str(tmp_path / "qrels.txt"))
    assert code == 0, out
    assert "1 of 2 judged queries answered" in out
    assert "MRR@10      25.00" in out  # q1: 1/2, q2 unanswered: 0
    code, out = run("eval", "score", str(tmp_path / "run.trec"), str(tmp_path / "qrels.txt"),
                    "--k", "1")  # fmt: skip
    assert code == 0 and "MRR@1       0.00" in out and "nDCG@1      0.00" in out


@pytest.mark.parametrize(
    ("run_text", "qrels_text", "message"),
    [
        ("q1 Q0 d1 1 0.5 t\nq1 d2 2 0.4 t\n", "q1 0 d1 1\n", "run.trec:2: expected 6 fields"),
        ("q1 Q0 d1 1 0.5 t\n", "q1 0 d1 one\n", "qrels.txt:1: relevance 'one'"),
        ("q1 Q0 d1 1 0.5 t\n", "q1 0 d1 0\n", "no query has a relevant document"),
    ],
)
def test_score_bad_files(tmp_path: Path, run_text: str, qrels_text: str, message: str) -> None:
    (tmp_path / "run.trec").write_text(run_text)
    (tmp_path / "qrels.txt").write_text(qrels_text)
    res = CliRunner().invoke(cli, ["eval", "score", str(tmp_path / "run.trec"),
                                   str(tmp_path / "qrels.txt")])  # fmt: skip
    assert res.exit_code == 1
    error_lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(error_lines) == 1 and message in error_lines[0], res.output

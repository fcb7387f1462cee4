"""TREC run files and qrels: round trip, both qrels formats, errors naming the line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from indexer.evaluation import EvalDataError, load_beir
from indexer.evaluation.beir import evaluate_bm25
from indexer.evaluation.metrics import score_scored_run
from indexer.evaluation.trec import read_qrels, read_run, write_run
from tests.indexer.evaluation.test_data import write_beir

RUN = {
    "q1": [("d1", 0.8123456789012345), ("d2", 0.5), ("d3", 0.5)],  # d2 / d3 tie
    "q2": [("d9", -1.25e-7)],
}


def test_run_round_trip(tmp_path: Path) -> None:
    path = write_run(tmp_path / "run.trec", RUN, "my-system")
    lines = path.read_text().splitlines()
    # trec_eval's order: ties by doc id descending, so d3 is rank 2
    assert lines[:3] == [
        "q1 Q0 d1 1 0.8123456789012345 my-system",
        "q1 Q0 d3 2 0.5 my-system",
        "q1 Q0 d2 3 0.5 my-system",
    ]
    back = read_run(path)
    assert {q: sorted(d) for q, d in back.items()} == {q: sorted(d) for q, d in RUN.items()}
    qrels = {"q1": {"d2": 1, "d3": 2}, "q2": {"d9": 1}}
    assert score_scored_run(back, qrels) == score_scored_run(RUN, qrels)


def test_write_run_rejects_whitespace_ids(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="whitespace"):
        write_run(tmp_path / "r", {"q 1": [("d", 1.0)]})
    with pytest.raises(ValueError, match="tag"):
        write_run(tmp_path / "r", RUN, "two words")


def test_read_qrels_trec_and_beir(tmp_path: Path) -> None:
    trec = tmp_path / "qrels.trec"
    trec.write_text("q1 0 d1 1\nq1 0 d2 0\nq2\t0\td3\t2\n")
    beir = tmp_path / "test.tsv"
    beir.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq2\td3\t2\n")
    expected = {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}}
    assert read_qrels(trec) == expected
    assert read_qrels(beir) == expected


RUN_ERRORS = [
    ("q1 Q0 d1 1 0.5 t\nq1 Q0 d2 2 0.4\n", r"run\.trec:2: expected 6 fields"),
    ("q1 Q0 d1 1 high t\n", r"run\.trec:1: score 'high' is not a number"),
    ("q1 Q0 d1 one 0.5 t\n", r"run\.trec:1: rank 'one'"),
    ("q1 Q0 d1 1 nan t\n", r"run\.trec:1: score 'nan' is not finite"),
    ("q1 Q0 d1 1 0.5 t\n\nq1 Q0 d1 2 0.4 t\n", r"run\.trec:3: document 'd1' listed twice"),
    ("\n", r"run\.trec: empty run file"),
]
QRELS_ERRORS = [
    ("q1 0 d1 1\nq1 0 d2\n", r"qrels:2: expected 4 fields"),
    ("q1 0 d1 yes\n", r"qrels:1: relevance 'yes'"),
    ("q1 0 d1 1\nq1 0 d1 2\n", r"qrels:2: duplicate judgement"),
    ("query-id\tcorpus-id\tscore\nq1\td1\tx\n", r"qrels:2: score 'x'"),
]


@pytest.mark.parametrize(
    ("reader", "name", "text", "message"),
    [(read_run, "run.trec", *case) for case in RUN_ERRORS]
    + [(read_qrels, "qrels", *case) for case in QRELS_ERRORS],
)
def test_readers_name_the_file_and_line_of_a_bad_line(
    tmp_path: Path, reader: Callable[[Path], object], name: str, text: str, message: str
) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(EvalDataError, match=message):
        reader(tmp_path / name)


ARGUANA_CORPUS = (
    '{"_id": "a1", "text": "Cats are better pets than dogs."}\n'
    '{"_id": "a2", "text": "Dogs are better pets than cats, say owners."}\n'
    '{"_id": "a3", "text": "Vitamin D is made in the skin."}\n'
)
ARGUANA_QUERIES = '{"_id": "a1", "text": "Cats are better pets than dogs."}\n'
ARGUANA_QRELS = "query-id\tcorpus-id\tscore\na1\ta2\t1\n"


def test_beir_excludes_self_on_arguana(tmp_path: Path) -> None:
    # the query is also document a1 (ArguAna): its own document would rank first
    argu = load_beir(
        write_beir(tmp_path / "arguana", ARGUANA_CORPUS, ARGUANA_QUERIES, ARGUANA_QRELS)
    )
    other = load_beir(
        write_beir(tmp_path / "other", ARGUANA_CORPUS, ARGUANA_QUERIES, ARGUANA_QRELS)
    )
    kept = evaluate_bm25(argu)
    assert kept.run["a1"][0][0] == "a2"
    assert "a1" not in {d for d, _ in kept.run["a1"]}
    assert kept.scores.mrr_at_10 == 1.0
    plain = evaluate_bm25(other)  # any other name: the self-hit stays and ranks first
    assert plain.run["a1"][0][0] == "a1" and plain.scores.mrr_at_10 == 0.5

"""Dataset readers: BEIR folders, STS-B files, echo triples; errors name file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indexer.evaluation.data import EvalDataError, load_beir, load_echo_triples, load_sts


def write_beir(root: Path, corpus: str, queries: str, qrels: str) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(corpus)
    (root / "queries.jsonl").write_text(queries)
    (root / "qrels" / "test.tsv").write_text(qrels)
    return root


GOOD_CORPUS = (
    '{"_id": "d1", "title": "Vitamin D", "text": "helps bones."}\n'
    '{"_id": "d2", "title": "", "text": "Cats sleep."}\n'
    '{"_id": "d3", "text": "No title field."}\n'
)
GOOD_QUERIES = '{"_id": "q1", "text": "vitamin"}\n{"_id": "q2", "text": "cats"}\n'
GOOD_QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\nq2\td9\t1\n"


def test_load_beir(tmp_path: Path) -> None:
    ds = load_beir(write_beir(tmp_path / "toy", GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS))
    assert ds.doc_ids == ["d1", "d2", "d3"]
    assert ds.doc_texts == ["Vitamin D helps bones.", "Cats sleep.", "No title field."]
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2, "d9": 1}}
    assert ds.eval_query_ids == ["q1", "q2"]
    assert ds.missing_docs == 1  # d9 is judged but not in the corpus


@pytest.mark.parametrize(
    ("corpus", "qrels", "message"),
    [
        (GOOD_CORPUS + "{not json\n", GOOD_QRELS, r"corpus\.jsonl:4: invalid JSON"),
        (GOOD_CORPUS + '{"_id": "d1", "text": "again"}\n', GOOD_QRELS, r":4: duplicate _id 'd1'"),
        (GOOD_CORPUS + '{"_id": "d4"}\n', GOOD_QRELS, r":4: field 'text'"),
        (GOOD_CORPUS, GOOD_QRELS + "q1\td2\n", r"test\.tsv:5: expected 3 tab-separated"),
        (GOOD_CORPUS, GOOD_QRELS + "q1\td3\thigh\n", r"test\.tsv:5: score 'high'"),
        (GOOD_CORPUS, GOOD_QRELS + "q9\td3\t1\n", r"not in queries\.jsonl \(first: 'q9'\)"),
    ],
)
def test_load_beir_errors(tmp_path: Path, corpus: str, qrels: str, message: str) -> None:
    root = write_beir(tmp_path / "bad", corpus, GOOD_QUERIES, qrels)
    with pytest.raises(EvalDataError, match=message):
        load_beir(root)


def test_load_beir_missing_files(tmp_path: Path) -> None:
    with pytest.raises(EvalDataError, match="not a BEIR folder"):
        load_beir(tmp_path / "nope")
    root = write_beir(tmp_path / "toy", GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS)
    with pytest.raises(EvalDataError, match=r"qrels/dev\.tsv"):
        load_beir(root, split="dev")


def test_load_sts(tmp_path: Path) -> None:
    f = tmp_path / "sts-test.csv"
    f.write_text(
        "g\tf\t2012\t1\t4.5\tA man plays.\tA man is playing.\n"
        'g\tf\t2012\t2\t0.0\tShe said "no".\tDogs run.\textra\tsources\n'
    )
    pairs = load_sts(tmp_path)  # a folder resolves to sts-test.csv
    assert pairs.scores == [4.5, 0.0]
    assert pairs.first == ["A man plays.", 'She said "no".']
    assert pairs.second == ["A man is playing.", "Dogs run."]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("g\tf\t2012\t3\tx\ta\tb\n", r":2: score 'x'"),
        ("g\tf\t2012\t3\t7\ta\tb\n", r":2: score 7.0 outside"),
        ("g\tf\t2012\t3\t1.0\ta\n", r":2: expected at least 7"),
    ],
)
def test_load_sts_errors(tmp_path: Path, line: str, message: str) -> None:
    f = tmp_path / "s.csv"
    f.write_text("g\tf\t2012\t1\t4.5\ta\tb\n" + line)
    with pytest.raises(EvalDataError, match=message):
        load_sts(f)


def test_load_echo_triples(tmp_path: Path) -> None:
    f = tmp_path / "t.json"
    f.write_text(json.dumps({"triples": [{"id": "x", "q": "a b", "s_pos": "a c", "s_neg": "a d"}]}))
    [t] = load_echo_triples(f)
    assert (t.id, t.query, t.positive, t.negative) == ("x", "a b", "a c", "a d")
    f.write_text(json.dumps({"triples": [{"q": "a", "s_pos": "b"}]}))
    with pytest.raises(EvalDataError, match=r"triples\[0\]: field 's_neg'"):
        load_echo_triples(f)


def test_shared_data_files_load(shared_data: Path) -> None:
    mini = load_beir(shared_data / "beir" / "scifact-mini")
    assert (len(mini.doc_ids), len(mini.eval_query_ids), mini.missing_docs) == (500, 50, 0)
    assert len(load_sts(shared_data / "sts" / "STSBenchmark" / "stsbenchmark")) == 1379
    assert len(load_echo_triples(shared_data / "echo_toy_triples_paper_subset.json")) == 28

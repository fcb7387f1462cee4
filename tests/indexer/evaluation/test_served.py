"""``ember eval beir --served``: chunked, stored and searched as ``/search`` does, scored like the
exact evaluation; checked against a brute-force ranking over the very vectors the store holds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from ember.cli import cli
from encoders import Encoder
from encoders.config import EncoderConfig
from encoders.testing import tiny_model_folder
from indexer.edge_store import EdgeStore
from indexer.evaluation import load_beir
from indexer.evaluation.beir import score_beir
from indexer.evaluation.served import COLLECTION, evaluate_served
from indexer.pipeline import chunk_documents
from indexer.readers import read_corpus
from tests.indexer.evaluation.test_data import write_beir
from tests.indexer.evaluation.test_quality_bench import load_bench

WORDS = [
    "vitamin",
    "bone",
    "cat",
    "sleep",
    "protein",
    "cell",
    "gene",
    "heart",
    "blood",
    "brain",
    "virus",
    "lung",
    "sugar",
    "fat",
]


def toy_beir(root: Path) -> Path:
    """14 documents of 6-30 words (several chunks each at 8 tokens), 6 judged queries."""
    rng = np.random.default_rng(7)
    docs, queries, qrels = [], [], ["query-id\tcorpus-id\tscore"]
    for i in range(14):
        words = " ".join(rng.choice(WORDS, size=int(rng.integers(6, 30))))
        docs.append(json.dumps({"_id": f"d{i}", "title": f"T{i} {WORDS[i]}", "text": words}))
    for j in range(6):
        queries.append(json.dumps({"_id": f"q{j}", "text": f"{WORDS[j]} {WORDS[j + 5]}"}))
        qrels += [f"q{j}\td{j}\t1", f"q{j}\td{j + 5}\t2"]
    corpus, qs, rels = ("\n".join(x) + "\n" for x in (docs, queries, qrels))
    return write_beir(root, corpus, qs, rels)


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Encoder, str]:
    root = tmp_path_factory.mktemp("served-eval")
    base = tiny_model_folder(root / "base", "llama")
    EncoderConfig(name="tiny-bi", base_model=str(base), attention="bidirectional").save(
        root / "enc"
    )
    return Encoder.load(root / "enc"), str(root / "enc")


def test_served_eval_matches_brute_force(tmp_path: Path, tiny_encoder: tuple[Encoder, str]) -> None:
    encoder, _ = tiny_encoder
    dataset = load_beir(toy_beir(tmp_path / "toy"))
    instruction = "Given a query, retrieve documents"
    result = evaluate_served(
        encoder, dataset, instruction=instruction, chunk_tokens=8, overlap=2,
        data_dir=tmp_path / "data",
    )  # fmt: skip
    d = result.details
    assert (
        isinstance(d["chunks"], int)
        and d["chunks"] > 14
        and d["chunk_tokens"] == 8
        and d["overlap"] == 2
    )
    # this small a collection is below the engine's indexing threshold: exact search
    assert d["hnsw_indexed_vectors"] == 0

    # brute force over the vectors the store holds: max over each document's chunk cosines
    chunks = list(chunk_documents(read_corpus(dataset.path, fmt="beir"), encoder.tokenizer, 8, 2))
    assert len(chunks) == d["chunks"]
    store = EdgeStore(tmp_path / "data" / "edge")
    try:
        stored = store.retrieve_vectors(COLLECTION, [c.point_id for c in chunks], ["dense"])
    finally:
        store.close()
    vectors = np.stack([stored[c.point_id]["dense"] for c in chunks])
    qids = dataset.eval_query_ids
    queries = encoder.encode_queries([dataset.queries[q] for q in qids], instruction)
    cos = np.asarray(queries, dtype=np.float32) @ vectors.T
    run = {}
    for qi, q in enumerate(qids):
        best: dict[str, float] = {}
        for ci, c in enumerate(chunks):
            best[c.doc_id] = max(best.get(c.doc_id, -np.inf), float(cos[qi, ci]))
        run[q] = sorted(best.items(), key=lambda kv: -kv[1])[:100]
    brute, kept = score_beir(dataset, run)

    assert result.scores.ndcg_at_10 == brute.ndcg_at_10
    assert result.scores.recall_at_100 == brute.recall_at_100
    assert result.scores.mrr_at_10 == brute.mrr_at_10
    for q in qids:  # same documents in the same order, the same (best-chunk) scores
        assert [doc for doc, _ in result.run[q]] == [doc for doc, _ in kept[q]]
        np.testing.assert_allclose(
            [s for _, s in result.run[q]], [s for _, s in kept[q]], atol=1e-5
        )


def test_cli_served_json(tmp_path: Path, tiny_encoder: tuple[Encoder, str]) -> None:
    _, folder = tiny_encoder
    root = toy_beir(tmp_path / "toy")
    args = ["eval", "beir", str(root), "--encoder", folder, "--served", "--no-progress"]
    res = CliRunner().invoke(cli, [*args, "--chunk-tokens", "8", "--overlap", "2", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["path"] == "served" and out["mode"] == "dense" and out["group_by"] == "doc_id"
    assert out["chunk_tokens"] == 8 and out["overlap"] == 2 and out["hnsw_ef"] == 256
    assert out["queries"] == 6 and out["docs"] == 14 and 0 <= out["ndcg@10"] <= 1
    assert out["instruction"]  # a decoder encoder: the same task instruction as the exact eval
    res = CliRunner().invoke(cli, [*args, "--mode", "hybrid"])
    assert res.exit_code == 0, res.output
    assert "served path hybrid" in res.stdout and "nDCG@10" in res.stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--chunk-tokens", "8"], "only with --served"),
        (["--served", "--mode", "sparse"], "--served evaluates an encoder"),
        (["--served", "--chunk-tokens", "8", "--overlap", "8"], "overlap must be"),
    ],
)
def test_cli_served_bad_options(
    tmp_path: Path, tiny_encoder: tuple[Encoder, str], extra: list[str], message: str
) -> None:
    root = toy_beir(tmp_path / "toy")
    args = ["eval", "beir", str(root), "--encoder", tiny_encoder[1], "--no-progress", *extra]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1 and message in res.output, res.output


def test_quality_bench_served_row(tmp_path: Path, tiny_encoder: tuple[Encoder, str]) -> None:
    """bench/quality.py --served: a separate row "<label>, served path" per encoder row, and
    "<label>, served path hybrid" when --served-mode hybrid is given too (same index)."""
    q = load_bench()
    encoder, _ = tiny_encoder
    dataset = load_beir(toy_beir(tmp_path / "toy"))
    runner = object.__new__(q.Runner)
    runner.args = argparse.Namespace(
        served_mode=["dense", "hybrid"], progress=False, mini_only_for=[]
    )
    runner.sets = [dataset.name]
    results: dict[str, dict[str, Any]] = {"tiny": {"encoder": {"name": "tiny-bi"}}}
    runner.served_rows(encoder, [q.Row(label="tiny", kind="encoder")], dataset, None, results)
    row = results["tiny, served path"]
    assert row["encoder"] == {"name": "tiny-bi"}
    assert row["toy"]["path"] == "served" and row["toy"]["chunk_tokens"] == 256
    assert 0 <= row["toy"]["ndcg@10"] <= 1
    hybrid = results["tiny, served path hybrid"]["toy"]
    assert hybrid["mode"] == "hybrid" and row["toy"]["mode"] == "dense"
    assert hybrid["index_seconds"] == row["toy"]["index_seconds"]


def test_served_modes_share_one_index(tmp_path: Path, tiny_encoder: tuple[Encoder, str]) -> None:
    """evaluate_served_modes indexes once and scores each mode exactly as a one-mode run does."""
    from indexer.evaluation.served import evaluate_served_modes

    encoder, _ = tiny_encoder
    dataset = load_beir(toy_beir(tmp_path / "toy"))
    kw: dict[str, Any] = {"instruction": None, "chunk_tokens": 8, "overlap": 2}
    both = evaluate_served_modes(encoder, dataset, modes=("dense", "hybrid"), **kw)
    assert [r.details["mode"] for r in both] == ["dense", "hybrid"]
    assert both[0].details["index_seconds"] == both[1].details["index_seconds"]  # one index
    for result, mode in zip(both, ("dense", "hybrid"), strict=True):
        alone = evaluate_served(encoder, dataset, mode=mode, **kw)
        assert result.run == alone.run
        assert result.scores == alone.scores
    assert both[0].run != both[1].run  # the modes really differ
    with pytest.raises(ValueError, match="served-path mode"):
        evaluate_served_modes(encoder, dataset, modes=("dense", "sparse"), **kw)

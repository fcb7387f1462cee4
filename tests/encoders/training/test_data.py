"""Data readers: the documented JSONL formats and the shared files' native formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from encoders.loading import load_tokenizer
from encoders.training.data import (
    DataError,
    EpochSampler,
    SourceBatcher,
    clean_wikitext,
    pack_blocks,
    read_beir_train,
    read_sentence_pairs,
    read_supervised_jsonl,
    read_texts,
    special_affixes,
)


def test_jsonl_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n\n{"text": \n')
    with pytest.raises(DataError, match=r"bad.jsonl:3: invalid JSON"):
        read_texts([bad])
    bad.write_text('{"text": "fine"}\n{"body": "no text"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: field 'text'"):
        read_texts([bad])
    bad.write_text('{"query": "q", "positive": "p", "negatives": "not a list"}\n')
    with pytest.raises(DataError, match=r":1: 'negatives' must be a list"):
        read_supervised_jsonl(bad, None)
    with pytest.raises(DataError, match="no such data file"):
        read_texts([tmp_path / "missing.txt"])


def test_wikitext_paragraphs_and_sentence_pairs(tmp_path: Path) -> None:
    raw = tmp_path / "wiki.txt"
    raw.write_text(
        " \n = Title = \n \n First sentence is here . Second one follows @-@ on . Third ends .\n"
        " \n = = Section = = \n Another paragraph with 1 @,@ 000 words . Its next line .\n"
    )
    texts = read_texts([raw])
    assert texts == [
        "First sentence is here . Second one follows-on . Third ends .",
        "Another paragraph with 1,000 words . Its next line .",
    ]
    pairs = read_sentence_pairs([raw], min_words=2)
    assert pairs[0] == ("First sentence is here .", "Second one follows-on .")
    assert ("Another paragraph with 1,000 words .", "Its next line .") in pairs
    assert all(a != b for a, b in pairs)
    assert clean_wikitext("3 @.@ 5 km") == "3.5 km"


def test_shared_files_native_formats(shared_data: Path) -> None:
    wiki = shared_data / "train" / "wikitext2_pytorch_examples" / "valid.txt"
    texts = read_texts([wiki])
    assert len(texts) > 1000 and not any(t.startswith("=") for t in texts)
    assert len(read_sentence_pairs([wiki])) > 1000
    wiki1m = shared_data / "train" / "simcse_wiki1m_prefix" / "wiki1m_for_simcse.first_1.28MB.txt"
    assert len(read_texts([wiki1m])) > 10000
    snli = read_supervised_jsonl(
        shared_data / "train" / "snli_nli_triples_from_senteval_dev_test.jsonl", None
    )
    assert len(snli.examples) == 6339 and snli.instruction.startswith("Given a premise")
    assert all(len(ex.negatives) == 1 for ex in snli.examples[:50])


def test_scifact_train_split_only(shared_data: Path) -> None:
    folder = shared_data / "beir" / "scifact"
    source = read_beir_train(folder, None, "random", 5, 0)
    train_ids = set()
    test_queries = set()
    for line in (folder / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        test_queries.add(line.split("\t")[0])
    for line in (folder / "qrels" / "train.tsv").read_text().splitlines()[1:]:
        train_ids.add(line.split("\t")[0])
    ids_of: dict[str, set[str]] = {}
    for rec in map(json.loads, (folder / "queries.jsonl").read_text().splitlines()):
        ids_of.setdefault(rec["text"], set()).add(rec["_id"])
    used = {ex.query for ex in source.examples}
    assert all(ids_of[q] & train_ids for q in used)
    # SciFact repeats two test queries' texts as train queries (871 = 870, 1291 = 1292):
    # no training query may be the text of a test query.
    assert not any(ids_of[q] & test_queries for q in used)
    assert "Obesity decreases life quality." not in used
    assert 900 < len(source.examples) < 919  # one per relevant (query, document) pair
    assert source.instruction.startswith("Given a scientific claim")


def test_packed_blocks_have_the_tokenizer_affixes(tiny_model: Path) -> None:
    tok = load_tokenizer(tiny_model)
    prefix, suffix = special_affixes(tok)
    blocks = pack_blocks(tok, ["the quick brown fox"] * 30, 16)
    assert all(len(b) == 16 for b in blocks)
    assert all(b[: len(prefix)] == prefix for b in blocks)
    if suffix:
        assert all(b[len(b) - len(suffix) :] == suffix for b in blocks)
    with pytest.raises(DataError, match="fewer than"):
        pack_blocks(tok, ["a"], 64)


def test_sampling_is_a_function_of_the_step() -> None:
    sampler = EpochSampler(10, 3, seed=1)
    epoch0 = [sampler.batch(s) for s in range(3)]
    assert len({i for b in epoch0 for i in b}) == 9  # no repeats within an epoch
    again = EpochSampler(10, 3, seed=1)
    assert again.batch(4) == sampler.batch(4) and again.batch(1) == epoch0[1]
    batcher = SourceBatcher([5, 9], 2, seed=0)
    seen = [batcher.batch(s) for s in range(batcher.per_epoch)]
    assert batcher.per_epoch == 2 + 4
    assert {s for s, _ in seen} == {0, 1}
    assert SourceBatcher([5, 9], 2, seed=0).batch(3) == seen[3]
    with pytest.raises(DataError):
        EpochSampler(2, 3, 0)

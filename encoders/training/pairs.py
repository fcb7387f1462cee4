"""Supervised contrastive data: queries with positives and hard negatives, from the Ember JSONL
format, SenEval SNLI triples, BEIR train splits (negatives mined with BM25 or at random),
self-supervised pairs from an unlabelled corpus, and scored STS pairs (docs/training.md)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from encoders.instructions import DEFAULT_TASK, TASKS
from encoders.jsonl import iter_jsonl
from encoders.training.records import DataError, _check, split_sentences, text_field
from encoders.tsv import iter_sts_tsv

NLI_INSTRUCTION = "Given a premise, retrieve a hypothesis that is entailed by the premise:"


@dataclass
class Example:
    """One query with its positive and candidate hard negatives.

    ``positive_keys`` identify every document relevant to the query (so an in-batch document
    that is another positive of this query is not counted as a negative).
    """

    query: str
    positive: str
    negatives: list[str]
    positive_key: str
    negative_keys: list[str]
    positive_keys: frozenset[str] = field(default_factory=frozenset)


@dataclass
class Source:
    """Examples of one dataset; a batch never mixes sources (in-batch negatives stay in-task)."""

    name: str
    instruction: str
    examples: list[Example]


def read_supervised_jsonl(path: Path, instruction: str | None) -> Source:
    """Ember format: ``{"query", "positive", "negatives": [...], "instruction"?}``;
    SenEval SNLI triples: ``{"anchor", "positive", "hard_negative"}``."""
    examples: list[Example] = []
    found_instruction: str | None = None
    for n, rec in iter_jsonl(path, DataError):
        where = f"{path}:{n}"
        if "anchor" in rec:
            query = text_field(rec, "anchor", where)
            negatives = [text_field(rec, "hard_negative", where)]
            found_instruction = found_instruction or NLI_INSTRUCTION
        else:
            query = text_field(rec, "query", where)
            raw_negatives = rec.get("negatives", [])
            if not isinstance(raw_negatives, list) or not all(
                isinstance(x, str) and x.strip() for x in raw_negatives
            ):
                raise DataError(f"{where}: 'negatives' must be a list of non-empty strings")
            negatives = list(raw_negatives)
            rec_instruction = text_field(rec, "instruction", where, required=False)
            if rec_instruction:
                if found_instruction and rec_instruction != found_instruction:
                    raise DataError(f"{where}: one instruction per file (split the file)")
                found_instruction = rec_instruction
        positive = text_field(rec, "positive", where)
        examples.append(Example(query, positive, negatives, positive, list(negatives)))
    if not examples:
        raise DataError(f"{path}: no examples")
    _positive_sets(examples)
    return Source(path.stem, instruction or found_instruction or "", examples)


def _positive_sets(examples: list[Example]) -> None:
    by_query: dict[str, set[str]] = {}
    for ex in examples:
        by_query.setdefault(ex.query, set()).add(ex.positive_key)
    for ex in examples:
        ex.positive_keys = frozenset(by_query[ex.query])


def read_beir_train(
    folder: Path,
    instruction: str | None,
    mining: str,
    depth: int,
    seed: int,
    split: str = "train",
) -> Source:
    """BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv): one example per relevant
    (query, document) pair; hard negatives from BM25 (top ``depth`` minus the positives) or
    random documents. The test split is refused: it is what the benchmarks measure."""
    if split == "test":
        raise DataError(f"{folder}: refusing to train on test qrels")
    qrels_file = folder / "qrels" / f"{split}.tsv"
    if not qrels_file.is_file():
        raise DataError(f"{folder}: no qrels/{split}.tsv (training needs a train split)")
    qrels: dict[str, list[str]] = {}
    with qrels_file.open(encoding="utf-8") as stream:
        for lineno, line in enumerate(stream, start=1):
            parts = line.rstrip("\n").split("\t")
            if lineno == 1 and parts[0] == "query-id":
                continue
            if len(parts) != 3:
                raise DataError(f"{qrels_file}:{lineno}: expected query-id, corpus-id, score")
            if float(parts[2]) > 0:
                qrels.setdefault(parts[0], []).append(parts[1])
    doc_ids: list[str] = []
    doc_texts: list[str] = []
    for n, rec in iter_jsonl(folder / "corpus.jsonl", DataError):
        where = f"{folder / 'corpus.jsonl'}:{n}"
        doc_ids.append(str(rec.get("_id", rec.get("id"))))
        title = text_field(rec, "title", where, required=False)
        doc_texts.append(f"{title} {text_field(rec, 'text', where)}".strip())
    test_ids = _qrels_queries(folder / "qrels" / "test.tsv")
    queries: dict[str, str] = {}
    test_texts: set[str] = set()
    for n, rec in iter_jsonl(folder / "queries.jsonl", DataError):
        qid = str(rec.get("_id", rec.get("id")))
        if qid in qrels or qid in test_ids:
            text = text_field(rec, "text", f"{folder / 'queries.jsonl'}:{n}")
            if qid in test_ids:
                test_texts.add(_norm(text))
            if qid in qrels:
                queries[qid] = text
    index = {d: i for i, d in enumerate(doc_ids)}
    # A train query whose text is also a test query (SciFact has two such pairs) would leak
    # the test set through the back door: left out.
    qids = [
        q
        for q in qrels
        if q in queries
        and _norm(queries[q]) not in test_texts
        and any(d in index for d in qrels[q])
    ]
    if not qids:
        raise DataError(f"{folder}: no train query has a relevant document in the corpus")
    candidates = _mine(
        [queries[q] for q in qids],
        doc_texts,
        mining,
        depth,
        seed,
        [qrels[q] for q in qids],
        doc_ids,
    )
    examples = []
    for qid, cands in zip(qids, candidates, strict=True):
        positives = frozenset(d for d in qrels[qid] if d in index)
        for pos in sorted(positives):
            examples.append(
                Example(
                    query=queries[qid],
                    positive=doc_texts[index[pos]],
                    negatives=[doc_texts[i] for i in cands],
                    positive_key=pos,
                    negative_keys=[doc_ids[i] for i in cands],
                    positive_keys=positives,
                )
            )
    task = folder.name.removesuffix("-mini")
    return Source(folder.name, instruction or TASKS.get(task, ""), examples)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _qrels_queries(file: Path) -> set[str]:
    if not file.is_file():
        return set()
    with file.open(encoding="utf-8") as stream:
        return {line.split("\t", 1)[0] for line in stream if line.strip()} - {"query-id"}


def _mine(
    queries: list[str],
    docs: list[str],
    mining: str,
    depth: int,
    seed: int,
    positives: list[list[str]],
    doc_ids: list[str],
) -> list[list[int]]:
    rng = random.Random(seed)
    if mining == "random":
        out = []
        for pos in positives:
            pool = [i for i in rng.sample(range(len(docs)), min(depth, len(docs)))]
            out.append([i for i in pool if doc_ids[i] not in pos])
        return out
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(docs, stopwords="en", show_progress=False), show_progress=False)
    k = min(depth + max(len(p) for p in positives), len(docs))
    hits, _ = retriever.retrieve(
        bm25s.tokenize(queries, stopwords="en", show_progress=False), k=k, show_progress=False
    )
    return [
        [int(i) for i in row if doc_ids[int(i)] not in pos][:depth]
        for row, pos in zip(hits, positives, strict=True)
    ]


def _corpus_file(path: Path) -> Path:
    """A corpus JSONL, or a BEIR folder's ``corpus.jsonl``."""
    path = _check(path)
    if path.is_dir():
        path = _check(path / "corpus.jsonl")
    return path


def read_corpus_pairs(path: Path, instruction: str | None, seed: int) -> Source:
    """Self-supervised pairs from an unlabelled corpus (JSONL with ``text`` and optional
    ``title``, or a BEIR folder): the title is the query and the text without it the positive,
    so no labels are needed and it works for any user's corpus. A record without a title
    gives an inverse-cloze pair instead (one seeded sentence against the rest of the text);
    a text of one sentence gives none. The instruction is the corpus's task (BEIR folder name,
    e.g. ``scifact``) or the web-search one."""
    file = _corpus_file(path)
    rng = random.Random(seed)
    examples: list[Example] = []
    for n, rec in iter_jsonl(file, DataError):
        where = f"{file}:{n}"
        key = str(rec.get("_id", rec.get("id", n)))
        text = text_field(rec, "text", where)
        title = text_field(rec, "title", where, required=False).strip()
        if title:
            query, positive = title, text
        else:
            sentences = split_sentences(text)
            if len(sentences) < 2:
                continue
            pick = rng.randrange(len(sentences))
            query = sentences[pick]
            positive = " ".join(sentences[:pick] + sentences[pick + 1 :])
        examples.append(Example(query, positive, [], key, [], frozenset({key})))
    if not examples:
        raise DataError(f"{file}: no (title, text) or (sentence, rest) pair in the corpus")
    name = path.name if path.is_dir() else path.parent.name
    task = name.removesuffix("-mini")
    return Source(f"{name}:pairs", instruction or TASKS.get(task, TASKS[DEFAULT_TASK]), examples)


@dataclass
class ScoredSource:
    """Sentence pairs with a graded similarity (STS-B train): trained with CoSENT, the
    instruction on both sides (as STS is evaluated)."""

    name: str
    instruction: str
    pairs: list[tuple[str, str, float]]


def read_scored_pairs(path: Path, instruction: str | None) -> ScoredSource:
    """STS Benchmark CSV (tab-separated: genre, file, year, id, score, sentence 1, sentence 2)
    or JSONL ``{"text1", "text2", "score"}``. Never a test split: refused by name."""
    path = _check(path)
    if "test" in path.name.lower():
        raise DataError(f"{path}: refusing to train on a test split")
    pairs: list[tuple[str, str, float]] = []
    if path.suffix == ".jsonl":
        for n, rec in iter_jsonl(path, DataError):
            where = f"{path}:{n}"
            score = rec.get("score")
            if not isinstance(score, int | float) or isinstance(score, bool):
                raise DataError(f"{where}: field 'score' must be a number")
            pairs.append((text_field(rec, "text1", where), text_field(rec, "text2", where), score))
    else:
        for _, first, second, score in iter_sts_tsv(path, DataError):
            if first.strip() and second.strip():
                pairs.append((first, second, score))
    if len(pairs) < 2:
        raise DataError(f"{path}: fewer than two scored pairs")
    return ScoredSource(path.stem, instruction or TASKS["sts"], pairs)


def read_supervised(
    paths: Sequence[str | Path],
    instruction: str | None,
    mining: str,
    depth: int,
    seed: int,
) -> list[Source]:
    sources = []
    for raw in paths:
        path = _check(Path(raw))
        if path.is_dir():
            sources.append(read_beir_train(path, instruction, mining, depth, seed))
        else:
            sources.append(read_supervised_jsonl(path, instruction))
    return sources

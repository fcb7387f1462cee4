"""``ember eval``: retrieval quality on a BEIR folder, STS-B Spearman, the Echo prefix test."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ember.commands.options import (
    chunk_options,
    encoder_spec_option,
    fusion_option,
    instruction_options,
    int_option,
    mode_option,
    task_option,
)
from ember.errors import UserError

if TYPE_CHECKING:
    from encoders import Encoder
    from indexer.evaluation.cache import VectorCache

R = TypeVar("R")


@click.group("eval")
def eval_group() -> None:
    """Evaluate encoders: BEIR retrieval, STS-B, the Echo-embeddings prefix test."""


_encoder_option = encoder_spec_option(
    None, "Encoder preset, encoder folder or HF model folder [default: smollm2-ember]."
)
_output_option = click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the result as JSON to this file.",
)


def _encoder_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        _encoder_option,
        instruction_options(
            instruction="Instruction text (overrides --task).",
            no_instruction="Encode without any instruction. Default: the task's instruction for "
            "decoder encoders, none for encoder-only models (e.g. MiniLM).",
        ),
        click.option(
            "--cache-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Vector cache folder [default: $EMBER_DATA_DIR/eval-cache, i.e. .ember/...].",
        ),
        click.option("--no-cache", is_flag=True, help="Do not read or write cached vectors."),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
        _output_option,
        click.option("--progress/--no-progress", default=True, help="Progress bars on stderr."),
    ]

    @functools.wraps(f)
    def packed(**kwargs: Any) -> Any:
        run = EvalRun(**{name: kwargs.pop(name) for name in EvalRun.__dataclass_fields__})
        return f(run=run, **kwargs)

    wrapped: Callable[..., Any] = packed
    for option in reversed(options):
        wrapped = option(wrapped)
    return wrapped


@dataclass(frozen=True)
class EvalRun:
    """What every encoder evaluation takes (the options of :func:`_encoder_options`)."""

    encoder_spec: str | None
    instruction: str | None
    no_instruction: bool
    cache_dir: Path | None
    no_cache: bool
    as_json: bool
    output: Path | None
    progress: bool

    @property
    def names_encoder(self) -> bool:
        return bool(self.encoder_spec or self.instruction or self.no_instruction)

    def load_encoder(self) -> Encoder:
        return _load_encoder(self.encoder_spec)

    def instruction_for(self, encoder: Encoder, task: str) -> str | None:
        return _instruction(encoder, task, self.instruction, self.no_instruction)

    def cache(self) -> VectorCache:
        return _cache(self.cache_dir, self.no_cache)

    def emit(self, result: dict[str, Any], lines: list[str]) -> None:
        _emit(result, lines, self.as_json, self.output)

    def evaluate(
        self, evaluator: Callable[..., R], data: Any, task: str, **kwargs: Any
    ) -> tuple[R, Encoder, str | None]:
        """``evaluator(encoder, data, instruction=..., cache=..., show_progress=..., **kwargs)``
        with the encoder these options name and their instruction for ``task``: the result,
        the encoder and the instruction."""
        encoder = self.load_encoder()
        instruction = self.instruction_for(encoder, task)
        shared = {"instruction": instruction, "cache": self.cache(), "show_progress": self.progress}
        return evaluator(encoder, data, **shared, **kwargs), encoder, instruction


def _fusion_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        fusion_option(
            "dbsf", "Hybrid fusion (dbsf: the default of collections without a fitted fusion)."
        ),
        click.option("--fusion-k", type=click.IntRange(min=1), default=60, show_default=True),
        click.option(
            "--fusion-weight",
            type=click.FloatRange(0.0, 1.0),
            default=0.5,
            show_default=True,
            help="weighted: share of the dense cosine.",
        ),
        click.option(
            "--fusion-scale",
            type=click.FloatRange(min=0.0, min_open=True),
            default=10.0,
            show_default=True,
            help="weighted: c in the BM25 squash s / (s + c).",
        ),
        click.option(
            "--fusion-prefetch",
            type=click.IntRange(min=1),
            default=100,
            show_default=True,
            help="Candidates per prefetch.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _fusion(method: str, k: int, weight: float, scale: float, prefetch: int) -> Any:
    from indexer.sparse import Fusion

    return Fusion(method, k=k, weight=weight, scale=scale, prefetch=prefetch)  # type: ignore[arg-type]


def _load_encoder(spec: str | None) -> Encoder:
    from ember.commands.index import load_encoder_or_fail
    from encoders import DEFAULT_ENCODER

    encoder: Encoder = load_encoder_or_fail(spec or DEFAULT_ENCODER)
    return encoder


def _instruction(encoder: Encoder, task: str, text: str | None, off: bool) -> str | None:
    from encoders.instructions import UnknownTaskError
    from indexer.evaluation import default_instruction

    if off and text:
        raise UserError("--instruction and --no-instruction exclude each other")
    if off:
        return None
    if text:
        return text
    try:
        return default_instruction(encoder, task)
    except UnknownTaskError as exc:
        raise UserError(str(exc)) from None


def _cache(cache_dir: Path | None, no_cache: bool) -> VectorCache:
    from indexer.evaluation.cache import VectorCache, default_cache_dir

    return VectorCache(None if no_cache else cache_dir or default_cache_dir())


def _emit(result: dict[str, Any], lines: list[str], as_json: bool, output: Path | None) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        for line in lines:
            click.echo(line)
    if output is not None:
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(output)


def _guess_task(dataset: str) -> str:
    from encoders.instructions import DEFAULT_TASK, TASKS

    name = dataset.lower().replace("-", "_")
    for candidate in (name, name.removesuffix("_mini")):
        if candidate in TASKS:
            return candidate
    return DEFAULT_TASK


@eval_group.command("beir")
@click.option(
    "--run-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the scored run as a TREC run file (qid Q0 docid rank score tag).",
)
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--split", default="test", show_default=True, help="qrels/<split>.tsv to score.")
@task_option(
    None,
    "Instruction task for queries [default: the folder name if it is a known task "
    "(scifact, scifact-mini -> scifact), else web_search].",
)
@click.option("--bm25", is_flag=True, help="Evaluate the BM25 baseline instead of an encoder.")
@mode_option(
    "dense",
    "dense: exact cosine; sparse: Qdrant's BM25 (no encoder); hybrid: both, fused by "
    "Qdrant in one query (documents in a temporary embedded Qdrant collection).",
)
@click.option(
    "--served",
    is_flag=True,
    help="Evaluate the served path instead of exact cosine: index the corpus through the "
    "pipeline (chunked, edge store with HNSW) and search it as /search does (one hit per "
    "document); --mode dense or hybrid.",
)
@chunk_options(min_tokens=1, defaults=False, when="--served: ")
@click.option(
    "--hnsw-ef",
    type=click.IntRange(min=1),
    default=None,
    help="--served: HNSW candidates per search [default: EMBER_EDGE_HNSW_EF, 256].",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="--served: keep the index in <DATA_DIR>/edge [default: a temporary folder].",
)
@_fusion_options
@_encoder_options
def beir_command(
    path: Path,
    split: str,
    task: str | None,
    bm25: bool,
    mode: str,
    served: bool,
    chunk_tokens: int | None,
    overlap: int | None,
    hnsw_ef: int | None,
    data_dir: Path | None,
    fusion: str,
    fusion_k: int,
    fusion_weight: float,
    fusion_scale: float,
    fusion_prefetch: int,
    run: EvalRun,
    run_file: Path | None,
) -> None:
    """nDCG@10, recall@100 and MRR@10 on a BEIR folder (corpus.jsonl, queries.jsonl, qrels/).

    Dense retrieval is exact cosine over every document (title + " " + text). With --served,
    the documents are chunked, stored in Qdrant behind HNSW and searched as /search does.

    \b
    Examples:
      ember eval beir ../shared/data/beir/scifact-mini --encoder minilm
      ember eval beir ../shared/data/beir/scifact --bm25
      ember eval beir ../shared/data/beir/scifact-mini --encoder minilm --served
    """
    from indexer.evaluation import EvalDataError, load_beir
    from indexer.evaluation.beir import evaluate_bm25, evaluate_dense
    from indexer.evaluation.hybrid import evaluate_hybrid, evaluate_sparse

    served_only = {
        "--chunk-tokens": chunk_tokens,
        "--overlap": overlap,
        "--hnsw-ef": hnsw_ef,
        "--data-dir": data_dir,
    }
    if not served and any(v is not None for v in served_only.values()):
        given = ", ".join(k for k, v in served_only.items() if v is not None)
        raise UserError(f"{given}: only with --served")
    if served and (bm25 or mode == "sparse"):
        raise UserError("--served evaluates an encoder: --mode dense or hybrid, no --bm25")
    if (bm25 or mode == "sparse") and run.names_encoder:
        which = "--bm25" if bm25 else "--mode sparse"
        raise UserError(f"{which} takes no --encoder or instruction options")
    if bm25 and mode != "dense":
        raise UserError("--bm25 is the bm25s reference; --mode sparse is Qdrant's BM25")
    fusion_spec = _fusion(fusion, fusion_k, fusion_weight, fusion_scale, fusion_prefetch)
    try:
        dataset = load_beir(path, split)
    except EvalDataError as exc:
        raise UserError(str(exc)) from None
    if served:
        result, used = _served(
            dataset, mode, task, run,
            chunk_tokens=chunk_tokens, overlap=overlap, hnsw_ef=hnsw_ef, data_dir=data_dir,
            fusion=fusion_spec if mode == "hybrid" else None,
        )  # fmt: skip
    elif bm25:
        result = evaluate_bm25(dataset)
        used = str(result.details["bm25"])
    elif mode == "sparse":
        result = evaluate_sparse(dataset)
        used = f"Qdrant sparse: {result.details['bm25']}"
    elif mode == "hybrid":
        results, encoder, query_instruction = run.evaluate(
            evaluate_hybrid, dataset, task or _guess_task(dataset.name), fusions=[fusion_spec]
        )
        (result,) = results
        used = (
            f"{encoder.config.name} [{encoder.fingerprint}] + Qdrant BM25, fusion "
            f"{fusion_spec.as_dict()}, instruction: {query_instruction!r}"
        )
    else:
        result, encoder, query_instruction = run.evaluate(
            evaluate_dense, dataset, task or _guess_task(dataset.name)
        )
        used = f"{encoder.config.name} [{encoder.fingerprint}], instruction: {query_instruction!r}"
    s = result.scores
    lines = [
        f"{dataset.name} ({split}): {s.n_queries} queries, {result.n_docs} documents",
        f"system      {used}",
        f"nDCG@10     {100 * s.ndcg_at_10:.2f}",
        f"recall@100  {100 * s.recall_at_100:.2f}",
        f"MRR@10      {100 * s.mrr_at_10:.2f}",
    ]
    if dataset.missing_docs:
        lines.append(f"warning: {dataset.missing_docs} judged documents are not in the corpus")
    run.emit(result.as_dict(), lines)
    if run_file is not None:
        _write_run_file(run_file, result.run, result.system)


def _served(
    dataset: Any,
    mode: str,
    task: str | None,
    run: EvalRun,
    *,
    chunk_tokens: int | None,
    overlap: int | None,
    hnsw_ef: int | None,
    data_dir: Path | None,
    fusion: Any,
) -> tuple[Any, str]:
    """``ember eval beir --served``: the result and its "system" line."""
    from indexer.evaluation.served import evaluate_served
    from indexer.spec import DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP

    encoder = run.load_encoder()
    query_instruction = run.instruction_for(encoder, task or _guess_task(dataset.name))
    try:
        result = evaluate_served(
            encoder, dataset, instruction=query_instruction, mode=mode,
            chunk_tokens=DEFAULT_CHUNK_TOKENS if chunk_tokens is None else chunk_tokens,
            overlap=DEFAULT_OVERLAP if overlap is None else overlap, hnsw_ef=hnsw_ef,
            fusion=fusion, data_dir=data_dir, show_progress=run.progress,
        )  # fmt: skip
    except ValueError as exc:  # chunk settings the pipeline refuses
        raise UserError(str(exc)) from None
    d = result.details
    used = (
        f"{encoder.config.name} [{encoder.fingerprint}], instruction: {query_instruction!r}\n"
        f"served path {d['mode']}: {d['chunks']} chunks of {d['chunk_tokens']} tokens "
        f"(overlap {d['overlap']}), edge store, HNSW ef {d['hnsw_ef']} "
        f"({d['hnsw_indexed_vectors']} vectors in the graph), one hit per doc_id"
    )
    if mode == "hybrid":
        used += f", fusion {d['fusion']}"
    return result, used


@eval_group.command("fit-fusion")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--split", default="train", show_default=True, help="qrels/<split>.tsv (never test).")
@task_option(None, "Instruction task [default: from the folder name].")
@click.option(
    "--collection",
    default=None,
    help="Store the best fusion with this collection (or alias) of the configured store, "
    "where /search and `ember search` read it.",
)
@click.option("--data-dir", default=None, help="Embedded store folder [default: EMBER_DATA_DIR].")
@_encoder_options
def fit_fusion_command(
    path: Path,
    split: str,
    task: str | None,
    collection: str | None,
    data_dir: str | None,
    run: EvalRun,
) -> None:
    """Fit the hybrid fusion on a training split: RRF (k=60), DBSF and weighted formulas
    w * cos + (1 - w) * s / (s + c) over a grid of w and c, scored by nDCG@10 through Qdrant.

    \b
    Example:
      ember eval fit-fusion ../shared/data/beir/scifact --split train --encoder minilm \\
        --collection scifact
    """
    from indexer.evaluation import EvalDataError, load_beir
    from indexer.evaluation.hybrid import fit_fusion
    from indexer.sparse import FUSION_META_KEY

    if split == "test":
        raise UserError("--split: fit the fusion on a training split, never on test queries")
    try:
        dataset = load_beir(path, split)
    except EvalDataError as exc:
        raise UserError(str(exc)) from None
    fit, encoder, _ = run.evaluate(fit_fusion, dataset, task or _guess_task(dataset.name))
    by_method: dict[str, dict[str, Any]] = {}
    for row in fit.table:
        best = by_method.get(row["method"])
        if best is None or row["ndcg@10"] > best["ndcg@10"]:
            by_method[row["method"]] = row
    lines = [f"{dataset.name} ({split}): {len(dataset.eval_query_ids)} queries"]
    for method, row in by_method.items():
        lines.append(f"best {method:<9} nDCG@10 {100 * row['ndcg@10']:.2f}  {row}")
    lines.append(f"chosen: {fit.best.as_dict()}")
    result = {
        "dataset": dataset.name,
        "split": split,
        "encoder": encoder.config.name,
        "fingerprint": encoder.fingerprint,
        **fit.as_dict(),
    }
    if collection is not None:
        from ember.commands.index import open_store_or_fail, settings_for
        from indexer.store import CollectionNotFoundError

        store = open_store_or_fail(settings_for(data_dir, None))
        try:
            store.update_collection_meta(collection, {FUSION_META_KEY: fit.best.as_dict()})
        except CollectionNotFoundError:
            raise UserError(f"--collection: {collection!r} not found") from None
        finally:
            store.close()
        lines.append(f"stored with collection {collection!r}")
    run.emit(result, lines)


@eval_group.command("sts")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--split", default="test", show_default=True, help="sts-<split>.csv in a folder.")
@task_option("sts", "Instruction task.")
@_encoder_options
def sts_command(
    path: Path,
    split: str,
    task: str,
    run: EvalRun,
) -> None:
    """Spearman correlation between STS-B gold scores and the cosine of the two sentences.

    PATH is an STS-B file or a folder holding sts-<split>.csv. Decoder encoders get the STS
    instruction on both sentences (LLM2Vec's symmetric-task setup) unless --no-instruction.
    """
    from indexer.evaluation import EvalDataError, load_sts
    from indexer.evaluation.sts import evaluate_sts

    try:
        pairs = load_sts(path, split)
    except EvalDataError as exc:
        raise UserError(str(exc)) from None
    result, encoder, used = run.evaluate(evaluate_sts, pairs, task)
    lines = [
        f"{pairs.path}: {result.n_pairs} pairs",
        f"system    {encoder.config.name} [{encoder.fingerprint}], instruction: {used!r}",
        f"Spearman  {100 * result.spearman:.2f}",
        f"Pearson   {100 * result.pearson:.2f}",
    ]
    run.emit(result.as_dict(), lines)


@eval_group.command("echo")
@click.argument("path", type=click.Path(path_type=Path), required=False)
@_encoder_option
@instruction_options(instruction="Instruction applied to every sentence.")
@click.option(
    "--pooling",
    "poolings",
    multiple=True,
    type=click.Choice(["mean", "weighted_mean", "last_token", "first_token"]),
    help="Pool the prefix with these modes (repeatable) [default: the encoder's pooling].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (per triple).")
@_output_option
def echo_command(
    path: Path | None,
    encoder_spec: str | None,
    instruction: str | None,
    poolings: tuple[str, ...],
    as_json: bool,
    output: Path | None,
) -> None:
    """The Echo-embeddings prefix test (from Springer and others, 2024).

    For each triple whose three sentences share a word prefix A, pool only A's tokens inside
    each full sentence and count how often cos(q_A, s+_A) > cos(q_A, s-_A) (ties count half;
    0.5 = chance). With causal attention A cannot see what follows it, so every probe ties.
    PATH defaults to ../shared/data/echo_toy_triples_paper_subset.json.
    """
    from indexer.evaluation import EvalDataError, default_data_dir, load_echo_triples
    from indexer.evaluation.echo import echo_prefix_test

    file = path or default_data_dir() / "echo_toy_triples_paper_subset.json"
    try:
        triples = load_echo_triples(file)
    except EvalDataError as exc:
        raise UserError(str(exc)) from None
    encoder = _load_encoder(encoder_spec)
    if encoder.config.pooling not in {"mean", "weighted_mean", "last_token", "first_token"} and (
        not poolings
    ):
        raise UserError(f"pooling {encoder.config.pooling!r} has no prefix form; pass --pooling")
    try:
        results = echo_prefix_test(
            encoder, triples, instruction=instruction, poolings=list(poolings) or None
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    payload: dict[str, Any] = {
        "file": str(file),
        "encoder": encoder.config.name,
        "fingerprint": encoder.fingerprint,
        "attention": encoder.config.attention,
        "results": {m: r.as_dict(with_triples=True) for m, r in results.items()},
    }
    lines = [f"{file}: {len(triples)} triples; encoder {encoder.config.name} "
             f"({encoder.config.attention})"]  # fmt: skip
    for mode, r in results.items():
        full = ", ".join(f"{k} {100 * v:.0f}%" for k, v in r.full_sentence.items())
        lines += [
            f"[{mode}] prefix test: {100 * r.accuracy:.1f}% over {r.probes} probes "
            f"(wins {r.wins}, ties {r.ties}, losses {r.losses}; {r.skipped} triples without a "
            f"shared prefix skipped)",
            f"[{mode}] whole-sentence accuracy: {full}",
        ]
    _emit(payload, lines, as_json, output)


def _write_run_file(path: Path, run: dict[str, list[tuple[str, float]]], system: str) -> None:
    from indexer.evaluation.trec import write_run

    tag = "".join("_" if c.isspace() else c for c in system) or "ember"
    write_run(path, run, tag)
    click.echo(f"run file    {path} (tag {tag})", err=True)


@eval_group.command("score")
@click.argument("run_path", metavar="RUN", type=click.Path(path_type=Path))
@click.argument("qrels_path", metavar="QRELS", type=click.Path(path_type=Path))
@int_option(
    "--k",
    default=10,
    min=1,
    help="Cut-off of nDCG and MRR.",
)
@int_option(
    "--depth",
    default=100,
    min=1,
    help="Documents kept per query before scoring (BEIR's top_k).",
)
@click.option(
    "--exclude-self",
    is_flag=True,
    help="Drop a document retrieved for its own query id (ArguAna, Quora).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def score_command(
    run_path: Path, qrels_path: Path, k: int, depth: int, exclude_self: bool, as_json: bool
) -> None:
    """nDCG@k, recall@100 and MRR@k of any TREC run file, by trec_eval's definitions.

    RUN holds `qid Q0 docid rank score tag` lines; QRELS is TREC (`qid 0 docid rel`) or a BEIR
    qrels TSV. Queries without a relevant judgement are skipped; a judged query the run does not
    answer scores 0.

    \b
    Example:
      ember eval beir ../shared/data/beir/scifact --bm25 --run-file bm25.trec
      ember eval score bm25.trec ../shared/data/beir/scifact/qrels/test.tsv
    """
    from indexer.evaluation import EvalDataError
    from indexer.evaluation.metrics import judged_query_ids, mean_scores
    from indexer.evaluation.trec import read_qrels, read_run

    try:
        run = read_run(run_path)
        qrels = read_qrels(qrels_path)
        scores = mean_scores(run, qrels, k=k, exclude_self=exclude_self, depth=depth)
    except (EvalDataError, ValueError) as exc:
        raise UserError(str(exc)) from None
    judged = judged_query_ids(qrels)
    answered = sum(1 for q in judged if run.get(q))
    result = {"run": str(run_path), "qrels": str(qrels_path), "answered": answered, **scores}
    lines = [
        f"{run_path}: {answered} of {len(judged)} judged queries answered ({qrels_path})",
        f"nDCG@{k:<7d}{100 * scores[f'ndcg@{k}']:.2f}",
        f"recall@100  {100 * scores['recall@100']:.2f}",
        f"MRR@{k:<8d}{100 * scores[f'mrr@{k}']:.2f}",
    ]
    _emit(result, lines, as_json, None)


COMMANDS = [eval_group]

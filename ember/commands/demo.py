"""``ember demo``: index a small SciFact corpus into the embedded store and show ranked results.

No servers: qdrant runs embedded under the data folder, jobs run in this process.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from ember.commands.index import (
    dtype_option,
    encoder_option,
    format_hit,
    load_encoder_or_fail,
    open_store_or_fail,
    settings_for,
    store_options,
)
from ember.commands.options import int_option, mode_option
from ember.errors import UserError

REPO = Path(__file__).resolve().parents[2]
SHARED_SCIFACT = REPO.parent / "shared" / "data" / "beir" / "scifact-mini"
BUNDLED_SCIFACT = REPO / "indexer" / "data" / "scifact-demo"
COLLECTION = "scifact-demo"
SHOWN_QUERIES = 4


def find_corpus(explicit: Path | None) -> Path:
    if explicit is not None:
        if not (explicit / "corpus.jsonl").is_file():
            raise UserError(f"--corpus: {explicit} is not a BEIR folder (no corpus.jsonl)")
        return explicit
    for folder in (SHARED_SCIFACT, BUNDLED_SCIFACT):
        if (folder / "corpus.jsonl").is_file():
            return folder
    raise UserError(
        f"no demo corpus: neither {SHARED_SCIFACT} nor the bundled {BUNDLED_SCIFACT} exists; "
        "pass --corpus with a BEIR folder"
    )


def demo_subset(folder: Path, docs: int) -> tuple[list[dict[str, Any]], dict[str, str], Any]:
    """The documents judged relevant for the test queries first, then the rest in file order,
    up to ``docs`` (0 = all); the test queries and their judgements."""
    from indexer.readers import read_corpus, read_qrels, read_queries

    corpus = list(read_corpus(folder, fmt="beir"))
    queries = read_queries(folder)
    qrels_path = folder / "qrels" / "test.tsv"
    qrels = read_qrels(qrels_path) if qrels_path.is_file() else {}
    queries = {q: t for q, t in queries.items() if q in qrels} if qrels else queries
    if docs and docs < len(corpus):
        relevant = {d for judged in qrels.values() for d in judged}
        ordered = [d for d in corpus if d.id in relevant] + [
            d for d in corpus if d.id not in relevant
        ]
        corpus = sorted(ordered[: max(docs, 1)], key=corpus.index)
    kept = {d.id for d in corpus}
    qrels = {q: {d: g for d, g in j.items() if d in kept} for q, j in qrels.items()}
    records = [
        {"id": d.id, "title": d.title, "text": d.text, "source": folder.name} for d in corpus
    ]
    return records, queries, qrels


@click.command("demo")
@click.option(
    "--corpus",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="BEIR folder to index [default: ../shared/data/beir/scifact-mini, else the copy "
    "bundled in indexer/data/scifact-demo].",
)
@int_option(
    "--docs",
    default=150,
    min=0,
    help="Documents to index: those judged relevant for the test queries, then others up to "
    "this many (0 = all; all 500 take several minutes with smollm2-ember on 2 CPU cores).",
)
@click.option("--top-k", "-k", type=click.IntRange(min=1, max=50), default=5, show_default=True)
@mode_option(
    None, "Search mode [default: EMBER_SEARCH_MODE, hybrid: dense + Qdrant BM25, fused by Qdrant]."
)
@click.option("--reindex", is_flag=True, help="Rebuild even if the demo collection is current.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@encoder_option
@dtype_option
@store_options
def demo_command(
    corpus: Path | None,
    docs: int,
    top_k: int,
    mode: str | None,
    reindex: bool,
    progress: bool,
    encoder_spec: str,
    data_dir: str | None,
    backend: str | None,
) -> None:
    """Index a SciFact sample with the default encoder and print ranked results.

    The default encoder is smollm2-ember: SmolLM2-135M trained here (bench/train_smollm2.sh),
    shipped as an fp16 LoRA adapter inside the package.

    Everything runs in this process on the embedded store (EMBER_DATA_DIR, default .ember):
    read and chunk the corpus, encode the chunks, write a versioned collection, switch the
    alias `scifact-demo`, then search it with the SciFact test queries (instruction: the
    `scifact` task). A second run reuses the index unless --reindex.
    """
    from encoders.instructions import instruction_for
    from indexer.groups import DOC_ID
    from indexer.pipeline import chunk_documents, index_corpus, parse_version
    from indexer.readers import read_corpus
    from indexer.search import has_sparse, resolve_mode, search_batch

    folder = find_corpus(corpus)
    records, queries, qrels = demo_subset(folder, docs)
    if not queries:
        raise UserError(f"{folder}: no queries.jsonl queries to run")
    settings = settings_for(data_dir, backend)
    work = Path(settings.data_dir) / "demo"
    work.mkdir(parents=True, exist_ok=True)
    subset = work / "corpus.jsonl"
    tmp = subset.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    tmp.replace(subset)

    click.echo(f"corpus   {folder} ({len(records)} documents, {len(queries)} test queries)")
    started = time.perf_counter()
    encoder = load_encoder_or_fail(encoder_spec)
    load_s = time.perf_counter() - started
    index_s: float | None = None  # None: an existing index was reused
    click.echo(f"encoder  {encoder_spec} ({encoder.dim}-d, fingerprint {encoder.fingerprint}), "
               f"loaded in {load_s:.1f}s")  # fmt: skip
    store = open_store_or_fail(settings)
    try:
        click.echo(f"store    {store.backend} at {store.location}")
        served = store.get_alias(COLLECTION)
        parsed = parse_version(served) if served else None
        expected = sum(1 for _ in chunk_documents(read_corpus(subset), encoder.tokenizer))
        current = (
            parsed is not None
            and parsed[1] == encoder.fingerprint
            and store.count(COLLECTION) == expected
            and has_sparse(store, COLLECTION)  # built before BM25 vectors: rebuild
        )
        if current and not reindex:
            click.echo(f"index    reusing {served} ({expected} chunks; --reindex to rebuild)")
        else:
            report = index_corpus(subset, COLLECTION, encoder, store, progress=progress)
            index_s = report.seconds
            rate = report.chunks / report.seconds if report.seconds else 0.0
            click.echo(
                f"index    {report.documents} documents -> {report.chunks} chunks in "
                f"{report.seconds:.1f}s ({rate:.1f} chunks/s) -> {report.collection}"
            )
        ids = list(queries)
        chosen = resolve_mode(store, store.resolve(COLLECTION), mode, settings.search_mode)
        click.echo(f"search   mode {chosen}")
        started = time.perf_counter()
        results = search_batch(
            store, encoder, COLLECTION, [queries[q] for q in ids],
            instruction=instruction_for("scifact"), top_k=max(top_k, 10), mode=chosen,
            group_by=DOC_ID,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
    finally:
        store.close()

    shown = [q for q in ids if qrels.get(q)][:SHOWN_QUERIES] or ids[:SHOWN_QUERIES]
    for q in shown:
        hits = results[ids.index(q)][:top_k]
        relevant = qrels.get(q, {})
        click.echo(f"\nquery {q}: {queries[q]}")
        for rank, hit in enumerate(hits, start=1):  # one hit per document, its passages below
            mark = "*" if hit.payload["doc_id"] in relevant else " "
            for n, line in enumerate(format_hit(hit, rank, width=110)):
                click.echo(f"{mark if n == 0 else ' '}{line}")
    judged = [q for q in ids if qrels.get(q)]
    if judged:
        hits_at_10 = 0
        rr = 0.0
        for q in judged:
            ranking = [h.payload["doc_id"] for h in results[ids.index(q)]][:10]
            found = [i for i, d in enumerate(ranking) if d in qrels[q]]
            hits_at_10 += bool(found)
            rr += 1.0 / (found[0] + 1) if found else 0.0
        click.echo(
            f"\n* = judged relevant. Over all {len(judged)} test queries on this "
            f"{len(records)}-document sample: a relevant document in the top 10 for "
            f"{hits_at_10}/{len(judged)}, MRR@10 {rr / len(judged):.3f} "
            f"({len(ids)} queries searched in {elapsed:.1f}s). A small sample is easier than the "
            "full corpus: not comparable to BEIR scores."
        )
    indexed = "reused" if index_s is None else f"{index_s:.1f}s"
    click.echo(
        f"\ntiming   model load {load_s:.1f}s, index {indexed}, search {elapsed:.1f}s "
        f"({1000 * elapsed / max(len(ids), 1):.0f} ms per query, batched; dtype {encoder.dtype})"
    )
    click.echo(
        f'Try: ember search "your claim" --collection {COLLECTION} --task scifact'
        + (f" --encoder {encoder_spec}" if encoder_spec != "smollm2-ember" else "")
    )


COMMANDS = [demo_command]

"""``ember index``, ``ember search`` and ``ember collections``: the index pipeline from a shell.

The store is the configured one (``EMBER_QDRANT_URL`` for a server, else the embedded store under
``EMBER_DATA_DIR``; ``EMBER_EMBEDDED_BACKEND`` picks ``local`` or ``edge``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

import click

from ember.commands.options import (
    chunk_options,
    encoder_spec_option,
    format_option,
    fusion_option,
    instruction_options,
    int_option,
    mode_option,
    on_error_option,
)
from ember.errors import UserError

if TYPE_CHECKING:
    from indexer.settings import Settings
    from indexer.store import Hit, Store

S = TypeVar("S", bound="Settings")

FORMATS = ["auto", "jsonl", "beir", "csv", "dir"]


@overload
def settings_for(data_dir: str | None, backend: str | None) -> Settings: ...
@overload
def settings_for(data_dir: str | None, backend: str | None, kind: type[S]) -> S: ...
def settings_for(
    data_dir: str | None, backend: str | None, kind: type[Settings] | None = None
) -> Settings:
    """The environment's settings of one kind (the indexer's unless ``kind`` names the
    workers' or the API's), with ``--data-dir`` / ``--backend`` over them."""
    from indexer.settings import Settings

    # read the environment now (get_settings() caches the first read)
    settings = (kind or Settings)()
    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = Path(data_dir)
    if backend is not None:
        overrides["embedded_backend"] = backend
    return settings.model_copy(update=overrides) if overrides else settings


def open_store_or_fail(settings: Settings) -> Store:
    from indexer.store import StoreError
    from indexer.stores import open_store

    try:
        return open_store(settings)
    except StoreError as exc:
        raise UserError(str(exc)) from None
    except ValueError as exc:
        raise UserError(str(exc)) from None


# IndexSpec fields -> the `ember index` options that set them
SPEC_OPTIONS = {
    "collection": "--collection", "chunk_tokens": "--chunk-tokens", "overlap": "--overlap",
    "keep_versions": "--keep-versions", "payload_indexes": "--payload-index",
    "format": "--format", "on_error": "--on-error",
}  # fmt: skip


def load_encoder_or_fail(spec: str) -> Any:
    """The encoder ``spec`` names, or one line naming --encoder (an unknown preset, a folder
    that is not an encoder, a config that does not validate)."""
    from encoders import load_encoder
    from encoders.loading import ModelNotFoundError

    try:
        return load_encoder(spec)
    except (ModelNotFoundError, FileNotFoundError, ValueError) as exc:
        raise UserError(f"--encoder: {exc}") from None


def store_options(f: Any) -> Any:
    f = click.option(
        "--backend",
        type=click.Choice(["local", "edge"]),
        default=None,
        help="Embedded store backend [env EMBER_EMBEDDED_BACKEND; default edge].",
    )(f)
    f = click.option(
        "--data-dir",
        default=None,
        help="Folder of the embedded store [env EMBER_DATA_DIR; default .ember].",
    )(f)
    return f


# the --encoder of the commands that build and search collections
encoder_option = encoder_spec_option(
    "smollm2-ember",
    "Encoder preset (smollm2-ember, smollm2, smollm2-bi, minilm), encoder folder or HF "
    "model folder.",
)


# encoders.hardware.DTYPE_CHOICES, written out so the CLI's light paths do not import torch
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16", "int8")


def _use_dtype(_ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    # the encoder reads EMBER_DTYPE when it loads (here, in the API's startup, in an
    # in-process worker), so the option is passed on through the environment
    if value is not None:
        os.environ["EMBER_DTYPE"] = value


def dtype_option(f: Any) -> Any:
    return click.option(
        "--dtype",
        type=click.Choice(DTYPE_CHOICES),
        envvar="EMBER_DTYPE",
        default=None,
        expose_value=False,
        callback=_use_dtype,
        help="Dtype the encoder runs in, over its config's [env EMBER_DTYPE; presets: auto = "
        "bfloat16 on CPUs with bf16 units, else float32; int8 = dynamic quantisation, coarser]. "
        "The fingerprint is the same in every dtype; a build records the one it ran in.",
    )(f)


# ---- ember index ------------------------------------------------------------------------------
@click.command("index")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--collection", "-c", required=True, help="Collection (alias) name to serve under.")
@format_option(
    FORMATS,
    "auto",
    help="Corpus format; auto: folder with corpus.jsonl = beir, other folder = dir, "
    ".jsonl = jsonl, .csv/.tsv = csv.",
)
@on_error_option(
    "Bad records: fail = stop at the first (file:line), nothing served changes; "
    "skip = report each on stderr and go on."
)
@chunk_options(min_tokens=8, defaults=True)
@int_option("--batch-size", default=64, min=1, help="Chunks encoded and written per step.")
@int_option("--keep-versions", default=1, min=0, help="Previous builds kept for rollback.")
@click.option(
    "--payload-index",
    "payload_index",
    multiple=True,
    metavar="FIELD:TYPE",
    help="Index a metadata field for fast filters (TYPE: keyword, integer, float, bool, "
    "datetime, text, uuid); repeatable. doc_id and source are always indexed.",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
@encoder_option
@dtype_option
@store_options
def index_command(
    path: Path,
    collection: str,
    fmt: str,
    on_error: str,
    chunk_tokens: int,
    overlap: int,
    batch_size: int,
    keep_versions: int,
    payload_index: tuple[str, ...],
    progress: bool,
    encoder_spec: str,
    data_dir: str | None,
    backend: str | None,
) -> None:
    """Index a corpus at PATH and serve it as COLLECTION.

    Reads and chunks the whole corpus first (bad records stop the run before anything is
    written), encodes the chunks into a new versioned collection
    (<name>__<encoder>__v<N>), checks the point count, then switches the alias atomically.
    Searches keep hitting the previous build until that switch.

    \b
    Examples:
      ember index ../shared/data/beir/scifact-mini --collection scifact
      ember index notes/ --collection notes --format dir --encoder minilm
      ember index docs.jsonl -c docs --on-error skip
    """
    import time

    from pydantic import ValidationError

    from indexer.pipeline import BuildError, index_documents
    from indexer.readers import BadRecordError, read_corpus
    from indexer.sources import source_record
    from indexer.spec import IndexSpec, spec_error

    indexes: dict[str, str] = {}
    for item in payload_index:
        field, _, kind = item.partition(":")
        if not field or not kind:
            raise UserError(f"--payload-index: expected FIELD:TYPE, got {item!r}")
        indexes[field] = kind
    try:
        spec = IndexSpec(
            collection=collection, format=fmt, on_error=on_error,  # type: ignore[arg-type]
            chunk_tokens=chunk_tokens, overlap=overlap, keep_versions=keep_versions,
            payload_indexes=indexes,
        )  # fmt: skip
    except ValidationError as exc:
        raise UserError(spec_error(exc, SPEC_OPTIONS, whole="--overlap")) from None
    if not path.exists():
        raise UserError(f"PATH: no such file or folder: {path}")
    started = time.perf_counter()
    # read (and validate) everything before the slow encoder load: a bad record fails fast
    try:
        reader = read_corpus(path, fmt=fmt, on_error=on_error)
        docs = list(reader)
    except BadRecordError as exc:
        raise UserError(f"bad record {exc} (use --on-error skip to skip bad records)") from None
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    if not docs:
        raise UserError(f"PATH: no documents to index in {path}")
    settings = settings_for(data_dir, backend)
    store = open_store_or_fail(settings)
    try:
        encoder = load_encoder_or_fail(encoder_spec)
        # what the build is made of, so `ember jobs retrain` can rebuild it (indexer.sources)
        source = source_record(None, encoder_spec, encoder.fingerprint, {
            "path": str(path), "format": fmt, "on_error": on_error,
            "chunk_tokens": spec.chunk_tokens, "overlap": spec.overlap,
        })  # fmt: skip
        report = index_documents(  # refuses chunks longer than the encoder reads
            docs, spec.collection, encoder, store, chunk_tokens=spec.chunk_tokens,
            overlap=spec.overlap, batch_size=batch_size, progress=progress,
            keep_versions=spec.keep_versions, skipped=[str(e) for e in reader.errors],
            started=started, payload_indexes=spec.payload_indexes, source=source,
        )  # fmt: skip
    except (BuildError, ValueError) as exc:
        raise UserError(str(exc)) from None
    finally:
        store.close()
    skipped = f", skipped {report.skipped} bad records" if report.skipped else ""
    click.echo(
        f"indexed {report.documents} documents as {report.chunks} chunks into "
        f"{report.collection} in {report.seconds:.1f}s{skipped}; alias {collection!r} -> "
        f"{report.collection}",
        err=True,
    )


# ---- ember search -----------------------------------------------------------------------------
def format_hits(hits: list[Hit], width: int = 160, start: int = 1) -> list[str]:
    """One line per hit (ranks from ``start``); a document hit's further passages follow
    on indented lines of their own (so ``zip(format_hits(hits), hits)`` pairs only chunk
    hits: see :func:`format_hit`)."""
    lines = []
    for rank, hit in enumerate(hits, start=start):
        lines.extend(format_hit(hit, rank, width))
    return lines


def format_hit(hit: Hit, rank: int, width: int = 160) -> list[str]:
    """The hit's line (its best chunk), then one indented line per further passage."""

    def snippet(p: dict[str, Any], room: int) -> str:
        title = str(p.get("title") or "").strip()
        text = " ".join(str(p.get("text") or "").split())
        out = f"{title} | {text}" if title else text
        return out[: room - 3] + "..." if len(out) > room else out

    p = hit.payload
    label = f"{p.get('doc_id', hit.id)}#{p.get('chunk_index', 0)}"
    lines = [f"{rank:>3}. {hit.score:.4f}  {label:<16} {snippet(p, width)}"]
    for passage in hit.passages[1:]:
        q = passage.payload
        text = snippet({"text": q.get("text")}, width - 4)
        lines.append(f"     {passage.score:.4f}  {'#' + str(q.get('chunk_index', 0)):>16} {text}")
    return lines


def parse_filter_option(raw: str | None) -> dict[str, Any] | None:
    from indexer.store import parse_filter

    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"--filter: invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(value, dict):
        raise UserError('--filter: expected a JSON object, e.g. {"source": "pubmed"}')
    try:
        parse_filter(value)
    except ValueError as exc:
        raise UserError(f"--filter: {exc}") from None
    return value


@click.command("search")
@click.argument("query", required=False)
@click.option(
    "--collection",
    "-c",
    default="default",
    show_default=True,
    help="Alias or collection to search (see `ember collections`).",
)
@instruction_options(
    task=(
        None,
        "Task whose instruction is prepended to the query (e.g. web_search, scifact); "
        "see `ember search --list-tasks`. Default: web_search.",
    ),
    instruction="A custom query instruction (overrides --task).",
)
@int_option(
    "--top-k",
    "-k",
    default=10,
    min=1,
    max=1000,
    help="Number of hits: documents (chunks with --chunks).",
)
@int_option(
    "--offset",
    default=0,
    min=0,
    help="Skip that many hits: the next page is --offset OFFSET+TOP_K.",
)
@click.option(
    "--chunks",
    is_flag=True,
    help="One hit per chunk (default: one per document, its best chunks shown below it).",
)
@click.option(
    "--filter",
    "filter_json",
    default=None,
    help='Payload filter as JSON: {"field": value}, {"field": [v1, v2]}, '
    '{"field": {"gte": 1, "lt": 5}}; keys are ANDed.',
)
@mode_option(
    None,
    "dense (cosine), sparse (Qdrant BM25) or hybrid (both, fused by Qdrant). "
    "Default: EMBER_SEARCH_MODE (hybrid), dense for collections built without BM25 vectors.",
)
@fusion_option(None, "Hybrid fusion [default: the collection's fitted fusion, else dbsf].")
@click.option("--json", "as_json", is_flag=True, help="Print hits as JSON lines.")
@click.option("--list-tasks", is_flag=True, is_eager=True, help="List task names and exit.")
@encoder_option
@dtype_option
@store_options
def search_command(
    query: str | None,
    collection: str,
    task: str | None,
    instruction: str | None,
    top_k: int,
    offset: int,
    chunks: bool,
    filter_json: str | None,
    mode: str | None,
    fusion: str | None,
    as_json: bool,
    list_tasks: bool,
    encoder_spec: str,
    data_dir: str | None,
    backend: str | None,
) -> None:
    """Search COLLECTION for QUERY and print ranked documents (chunks with --chunks).

    The query is encoded with the task's instruction (documents never get one), with the same
    encoder that built the collection. A document appears once, scored by its best chunk, with
    up to three of its best chunks.

    \b
    Examples:
      ember search "vitamin D and infections" --collection scifact --task scifact
      ember search "rust ownership" -c notes --filter '{"source": "rust.md"}' --json
      ember search "vitamin D" -c scifact --offset 10   # the second page of ten
    """
    from encoders.instructions import DEFAULT_TASK, TASKS, UnknownTaskError, instruction_for
    from indexer.groups import DOC_ID, passages_of
    from indexer.search import EncoderMismatchError, resolve_mode, search
    from indexer.sparse import SparseUnavailableError
    from indexer.store import BuildIncompleteError, CollectionNotFoundError

    if list_tasks:
        for name, text in TASKS.items():
            click.echo(f"{name:<14} {text}")
        return
    if query is None or not query.strip():
        raise UserError("QUERY: give a non-empty query")
    if instruction is None:
        try:
            instruction = instruction_for(task or DEFAULT_TASK)
        except UnknownTaskError:
            raise UserError(f"--task: unknown task {task!r}; known: {', '.join(TASKS)}") from None
    filter_ = parse_filter_option(filter_json)
    settings = settings_for(data_dir, backend)
    store = open_store_or_fail(settings)
    try:
        try:
            store.check_complete(store.resolve(collection))
        except BuildIncompleteError as exc:
            raise UserError(f"--collection: {exc}") from None
        except CollectionNotFoundError:
            known = sorted(
                {a for c in store.list_collections() for a in c.aliases}
                | {c.name for c in store.list_collections()}
            )
            hint = f"; known: {', '.join(known)}" if known else "; index one with `ember index`"
            raise UserError(f"--collection: {collection!r} not found{hint}") from None
        try:
            chosen = resolve_mode(store, store.resolve(collection), mode, settings.search_mode)
        except SparseUnavailableError as exc:
            raise UserError(f"--mode: {exc}") from None
        encoder = load_encoder_or_fail(encoder_spec)
        try:
            hits = search(
                store, encoder, collection, query, instruction=instruction, top_k=top_k,
                filter=filter_, mode=chosen, fusion={"method": fusion} if fusion else None,
                offset=offset, group_by=None if chunks else DOC_ID,
            )  # fmt: skip
        except EncoderMismatchError as exc:
            raise UserError(f"--encoder: {exc}") from None
        except ValueError as exc:  # e.g. hybrid on a MoEE sum collection
            raise UserError(f"--mode: {exc}") from None
    finally:
        store.close()
    if as_json:
        for hit in hits:
            record: dict[str, Any] = {"id": hit.id, "score": hit.score, "payload": hit.payload}
            if not chunks:
                record["passages"] = passages_of(hit)
            click.echo(json.dumps(record))
    elif not hits:
        click.echo("no hits", err=True)
    else:
        for line in format_hits(hits, start=offset + 1):
            click.echo(line)


# ---- ember collections ------------------------------------------------------------------------
@click.command("collections")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@store_options
def collections_command(as_json: bool, data_dir: str | None, backend: str | None) -> None:
    """List collections with their aliases, point counts and vectors; a build that has not
    finished is marked "unfinished" (it is not served and cannot be searched)."""
    settings = settings_for(data_dir, backend)
    store = open_store_or_fail(settings)
    try:
        infos = store.list_collections()
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps([info.__dict__ for info in infos], indent=1))
        return
    if not infos:
        click.echo(f"no collections in {store.location}", err=True)
        return
    click.echo(f"{'collection':<44} {'aliases':<16} {'points':>8}  vectors")
    for info in infos:
        vectors = ", ".join(f"{k}:{v}" for k, v in info.vectors.items())
        aliases = ",".join(info.aliases) or "-"
        state = "" if info.complete else "  (unfinished build: not served)"
        click.echo(f"{info.name:<44} {aliases:<16} {info.points:>8}  {vectors}{state}")


COMMANDS = [index_command, search_command, collections_command]

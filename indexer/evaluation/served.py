"""BEIR retrieval evaluated through the served path: the index pipeline, the store, ``/search``.

The exact evaluation (:mod:`indexer.evaluation.beir`) encodes each whole document once and ranks
by numpy cosine. The product does three things differently, and this evaluation measures what
they cost: it chunks documents by tokens with overlap (:func:`indexer.pipeline.chunk_documents`,
what is encoded is ``title + "\\n" + chunk``), keeps the chunks in Qdrant behind HNSW at the
configured ``ef`` (:class:`~indexer.edge_store.EdgeStore`, the embedded default), and answers a
query with one hit per document, scored by its best chunk (``group_by="doc_id"``).

The corpus is read by the pipeline's own BEIR reader and indexed by
:func:`indexer.pipeline.index_documents` into a versioned collection behind an alias; queries run
through :func:`indexer.search.search_batch`, the function ``/search`` and ``ember search`` use, with
the same instruction as the exact evaluation. Scoring is the same trec_eval code with BEIR
conventions (self-hits excluded on ArguAna / Quora).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, Unpack

from indexer.edge_store import EdgeStore
from indexer.evaluation.beir import BeirResult, retrieval_depth, score_beir, scored_run_from_hits
from indexer.evaluation.data import BeirDataset
from indexer.groups import DOC_ID
from indexer.pipeline import index_documents
from indexer.readers import read_corpus
from indexer.search import search_batch
from indexer.spec import DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP

if TYPE_CHECKING:
    from encoders import Encoder
    from indexer.sparse import Fusion

COLLECTION = "served-eval"  # the alias the evaluation indexes under and searches
SERVED_MODES = ("dense", "hybrid")


@contextmanager
def served_store(data_dir: str | Path | None, hnsw_ef: int | None) -> Iterator[EdgeStore]:
    """The embedded edge store the server opens by default (``<data_dir>/edge``), in a temporary
    folder deleted afterwards unless ``data_dir`` is given."""
    with tempfile.TemporaryDirectory(prefix="ember-served-") as tmp:
        root = Path(data_dir) if data_dir is not None else Path(tmp)
        store = EdgeStore(root / "edge", hnsw_ef=hnsw_ef)
        try:
            yield store
        finally:
            store.close()


def default_hnsw_ef() -> int:
    """The ef the server's edge store searches with (``EMBER_EDGE_HNSW_EF``)."""
    from indexer.settings import get_settings

    return get_settings().edge_hnsw_ef


class ServedOptions(TypedDict, total=False):
    """The keyword options of :func:`evaluate_served_modes` (their defaults are there)."""

    chunk_tokens: int
    overlap: int
    hnsw_ef: int | None
    fusion: Fusion | None
    data_dir: str | Path | None
    show_progress: bool


def evaluate_served(
    encoder: Encoder,
    dataset: BeirDataset,
    *,
    instruction: str | None,
    mode: str = "dense",
    **options: Unpack[ServedOptions],
) -> BeirResult:
    """Index ``dataset``'s corpus through the pipeline (chunked, HNSW at ``hnsw_ef``, default
    the configured one), search its judged queries as ``/search`` does (``mode`` dense or
    hybrid, one hit per document) and score the top documents like the exact evaluation."""
    return evaluate_served_modes(
        encoder, dataset, instruction=instruction, modes=(mode,), **options
    )[0]


def evaluate_served_modes(
    encoder: Encoder,
    dataset: BeirDataset,
    *,
    instruction: str | None,
    modes: Sequence[str] = ("dense",),
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    overlap: int = DEFAULT_OVERLAP,
    hnsw_ef: int | None = None,
    fusion: Fusion | None = None,
    data_dir: str | Path | None = None,
    show_progress: bool = False,
) -> list[BeirResult]:
    """:func:`evaluate_served` for several search modes over ONE index (indexing is what costs
    time): one result per entry of ``modes``, in order."""
    if isinstance(modes, str):
        raise TypeError("modes is a sequence of modes, e.g. ('dense', 'hybrid')")
    bad = [m for m in modes if m not in SERVED_MODES]
    if bad or not modes:
        raise ValueError(f"served-path mode must be one of {SERVED_MODES}, got {bad or modes!r}")
    ef = default_hnsw_ef() if hnsw_ef is None else hnsw_ef
    reader = read_corpus(dataset.path, fmt="beir", on_error="fail")
    docs = list(reader)
    qids = dataset.eval_query_ids
    searched: list[tuple[str, list, float]] = []
    with served_store(data_dir, ef) as store:
        t0 = time.perf_counter()
        report = index_documents(
            docs, COLLECTION, encoder, store, chunk_tokens=chunk_tokens, overlap=overlap,
            progress=show_progress,
        )  # fmt: skip
        index_s = time.perf_counter() - t0
        for mode in modes:
            t0 = time.perf_counter()
            hits = search_batch(
                store, encoder, COLLECTION, [dataset.queries[q] for q in qids],
                instruction=instruction, top_k=retrieval_depth(dataset), mode=mode,
                fusion=fusion, group_by=DOC_ID,
            )  # fmt: skip
            searched.append((mode, hits, time.perf_counter() - t0))
        # the engine counts the sparse (inverted-index) vectors too: one per chunk
        dense_indexed = max(0, store.indexed_vectors(COLLECTION) - report.chunks)
    results = []
    for mode, hits, search_s in searched:
        scores, run = score_beir(dataset, scored_run_from_hits(qids, hits))
        details: dict[str, object] = {
            "fingerprint": encoder.fingerprint,
            "instruction": instruction,
            "path": "served",
            "mode": mode,
            "chunk_tokens": chunk_tokens,
            "overlap": overlap,
            "chunks": report.chunks,
            "store": "edge",
            "hnsw_ef": ef,
            # 0: every segment below the indexing threshold, so every search was exact
            "hnsw_indexed_vectors": dense_indexed,
            "group_by": DOC_ID,
            "index_seconds": round(index_s, 1),
            "search_seconds": round(search_s, 2),
        }
        if mode == "hybrid":
            details["fusion"] = fusion.as_dict() if fusion is not None else "collection default"
        results.append(
            BeirResult(
                dataset=dataset.name,
                split=dataset.split,
                system=encoder.config.name,
                scores=scores,
                n_docs=report.documents,
                details=details,
                run=run,
            )
        )
    return results

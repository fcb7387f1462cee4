"""What a build records about itself, so a later job can redo it: the encoder and the corpus.

Every build made from a corpus path or inline documents (an index job, ``ember index``,
:func:`indexer.pipeline.index_corpus` given its encoder spec) carries one ``ember_source`` entry
in its collection metadata, written in the same step that creates the collection (before any
point, so a served build always has it):

* ``encoder``: the spec it was built with (a preset name or an absolute folder) and that
  encoder's fingerprint (also in the collection name ``<name>__<fingerprint>__v<N>``);
* ``corpus``: where its documents came from: ``{"path", "format", "on_error"}`` for a corpus
  path, ``{"inline": <count>}`` for inline documents (not kept; a retrain then needs a corpus);
* ``chunking``: ``chunk_tokens`` and ``overlap``, so a rebuild chunks the same way;
* ``job``: the index job that made it (``None`` for ``ember index``).

The retrain pipeline (:mod:`workers.retrain`) reads it to find the serving encoder (training
starts there) and the corpus to rebuild, and the API (:mod:`search_api.served`) to load the
encoder of a collection it serves. Builds made before this record existed have none: the retrain
falls back to ``EMBER_ENCODER`` when its fingerprint matches the build's, else it needs
``current_encoder`` and ``corpus`` from the caller.

Why not rebuild from the stored payloads: points hold chunks (text, doc id, title, source and
metadata merged into one flat payload), overlapping windows of the original text cut at the old
encoder's token offsets. The full document text, and which payload keys were metadata, cannot be
recovered exactly from them, and a new encoder may chunk differently.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from indexer.store import SOURCE_META_KEY

if TYPE_CHECKING:
    from indexer.store import Store


def encoder_spec_of(spec: str) -> str:
    """A spec as it should be recorded: an existing folder made absolute, a preset as is."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def source_record(
    job_id: str | None, encoder_spec: str, fingerprint: str, index_spec: dict[str, Any]
) -> dict[str, Any]:
    """The ``ember_source`` record of a build of ``index_spec`` (``path`` or ``documents``,
    ``format``, ``on_error``, ``chunk_tokens``, ``overlap``) made with ``encoder_spec``."""
    corpus: dict[str, Any]
    if index_spec.get("path"):
        corpus = {
            "path": str(Path(index_spec["path"]).resolve()),
            "format": index_spec.get("format", "auto"),
            "on_error": index_spec.get("on_error", "fail"),
        }
    else:
        corpus = {"inline": len(index_spec.get("documents") or [])}
    chunking = {
        key: index_spec[key]
        for key in ("chunk_tokens", "overlap")
        if index_spec.get(key) is not None
    }
    return {
        "encoder": {"spec": encoder_spec_of(encoder_spec), "fingerprint": fingerprint},
        "corpus": corpus,
        "chunking": chunking,
        "job": job_id,
    }


def record_source(store: Store, collection: str, record: dict[str, Any]) -> None:
    store.update_collection_meta(collection, {SOURCE_META_KEY: record})


def read_source(store: Store, collection: str) -> dict[str, Any]:
    """The build's record; {} for a build that has none."""
    record = store.collection_meta(collection).get(SOURCE_META_KEY)
    return dict(record) if isinstance(record, dict) else {}

"""What a build records about itself, so a later job can redo it: the encoder and the corpus.

An index job writes one ``ember_source`` entry into its build collection's metadata when it begins
the build (before any point is written, so a served build always has it):

* ``encoder``: the spec it was built with (a preset name or an absolute folder) and that
  encoder's fingerprint (also in the collection name ``<name>__<fingerprint>__v<N>``);
* ``corpus``: where its documents came from: ``{"path", "format", "on_error"}`` for a corpus
  path, ``{"inline": <count>}`` for inline documents (not kept; a retrain then needs a corpus);
* ``chunking``: ``chunk_tokens`` and ``overlap``, so a rebuild chunks the same way;
* ``job``: the index job that made it.

The retrain pipeline (:mod:`workers.retrain`) reads it to find the serving encoder (training
starts there) and the corpus to rebuild. Builds made before this record existed, or by
``ember index`` (:func:`indexer.pipeline.index_corpus`), have none: the retrain falls back to
``EMBER_ENCODER`` when its fingerprint matches the build's, else it needs ``current_encoder`` and
``corpus`` from the caller.

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

BUILD_META_KEY = SOURCE_META_KEY  # beside indexer.store's "ember_build" (complete or not)


def encoder_spec_of(spec: str) -> str:
    """A spec as it should be recorded: an existing folder made absolute, a preset as is."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def build_record(
    job_id: str, encoder_spec: str, fingerprint: str, index_spec: dict[str, Any]
) -> dict[str, Any]:
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


def record_build(store: Store, collection: str, record: dict[str, Any]) -> None:
    store.update_collection_meta(collection, {BUILD_META_KEY: record})


def read_build(store: Store, collection: str) -> dict[str, Any]:
    """The build's record; {} for a build that has none."""
    record = store.collection_meta(collection).get(BUILD_META_KEY)
    return dict(record) if isinstance(record, dict) else {}

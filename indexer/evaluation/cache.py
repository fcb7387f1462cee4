"""On-disk cache of encoded texts, so evaluation re-runs are instant.

Layout: ``<root>/<encoder fingerprint>/<texts key>.npy`` with a ``.json`` sidecar. The encoder
fingerprint covers what determines vectors (base weights, attention, pooling, max length,
normalisation, adapters); the texts key hashes the texts in order plus the instruction prefix,
the max length and the dtype the encoder ran in (``auto`` resolved), which the fingerprint
leaves out.

Encoding runs in chunks and each finished chunk is saved under ``<texts key>.part-<chunk>/``, so an
interrupted run over a large corpus resumes where it stopped. Vectors do not depend on batch
composition (an Encoder guarantee), so chunking does not change them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, Unpack

import numpy as np
from tqdm.auto import tqdm

from encoders.vectors import l2_normalize

if TYPE_CHECKING:
    from encoders import Encoder, EncoderConfig

CACHE_FORMAT = 1
DEFAULT_CHUNK = 128  # texts per saved chunk: what an interrupted run can lose
SIMPLE_POOLINGS = ("mean", "weighted_mean", "last_token", "first_token")


def default_cache_dir() -> Path:
    from indexer.settings import get_settings

    return Path(get_settings().data_dir) / "eval-cache"


def texts_key(
    texts: Sequence[str], *, prefix: str, max_length: int, dtype: str, extra: str = ""
) -> str:
    h = hashlib.sha256()
    header = {"format": CACHE_FORMAT, "prefix": prefix, "max_length": max_length, "dtype": dtype}
    h.update(json.dumps({**header, "extra": extra}, sort_keys=True).encode())
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()[:20]


def _save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, np.ascontiguousarray(array, dtype=np.float32))
    tmp.replace(path)


class VectorCache:
    """Vectors for (config fingerprint, texts key); ``root=None`` disables caching."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root is not None else None

    def path(self, fingerprint: str, key: str) -> Path | None:
        return None if self.root is None else self.root / fingerprint / f"{key}.npy"

    def load(self, fingerprint: str, key: str, n: int) -> np.ndarray | None:
        path = self.path(fingerprint, key)
        if path is None or not path.is_file():
            return None
        try:
            array = np.load(path)
        except (OSError, ValueError):
            return None  # unreadable: recompute and overwrite
        if array.ndim != 2 or array.shape[0] != n:
            return None
        return array

    def store(self, fingerprint: str, key: str, array: np.ndarray, meta: dict[str, object]) -> None:
        path = self.path(fingerprint, key)
        if path is None:
            return
        _save_npy(path, array)
        info = {**meta, "rows": int(array.shape[0]), "dim": int(array.shape[1])}
        path.with_suffix(".json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")

    def part_dir(self, fingerprint: str, key: str, chunk: int) -> Path | None:
        return None if self.root is None else self.root / fingerprint / f"{key}.part-{chunk}"


def _encode_chunked(
    variants: dict[str, str],
    texts: Sequence[str],
    key: str,
    cache: VectorCache,
    encode_chunk: Callable[[Sequence[str]], dict[str, np.ndarray]],
    *,
    meta: dict[str, object],
    chunk: int,
    show_progress: bool,
    desc: str,
) -> dict[str, np.ndarray]:
    """Shared loop: ``variants`` maps a variant name to its fingerprint; ``encode_chunk`` returns
    one array per variant name. Loads finished results, resumes from saved chunks."""
    done = {name: cache.load(fp, key, len(texts)) for name, fp in variants.items()}
    if all(v is not None for v in done.values()):
        return {name: v for name, v in done.items() if v is not None}
    parts: dict[str, list[np.ndarray]] = {name: [] for name in variants}
    part_dirs = {name: cache.part_dir(fp, key, chunk) for name, fp in variants.items()}
    starts = range(0, len(texts), chunk)
    with tqdm(total=len(texts), desc=desc, unit="text", disable=not show_progress) as bar:
        for n, start in enumerate(starts):
            block = texts[start : start + chunk]
            saved = {
                name: np.load(d / f"{n:06d}.npy")
                for name, d in part_dirs.items()
                if d is not None and (d / f"{n:06d}.npy").is_file()
            }
            if len(saved) == len(variants) and all(
                a.shape[0] == len(block) for a in saved.values()
            ):
                vectors = saved
            else:
                vectors = encode_chunk(block)
                for name, d in part_dirs.items():
                    if d is not None:
                        _save_npy(d / f"{n:06d}.npy", vectors[name])
            for name in variants:
                parts[name].append(vectors[name])
            bar.update(len(block))
    out = {}
    for name, fp in variants.items():
        array = np.concatenate(parts[name]) if parts[name] else np.zeros((0, 0), dtype=np.float32)
        cache.store(fp, key, array, {**meta, "variant": name})
        d = part_dirs[name]
        if d is not None:  # this run's chunks, and any left by a run with another chunk size
            for stale in d.parent.glob(f"{key}.part-*"):
                shutil.rmtree(stale, ignore_errors=True)
        out[name] = array
    return out


class CacheOptions(TypedDict, total=False):
    """What :func:`encode_cached` and :func:`encode_variants_cached` take besides the texts
    (their defaults are :func:`_cached`'s): the query ``instruction`` and ``max_length`` (default:
    the config's), the ``cache`` (default: none), texts per saved ``chunk``, and the progress bar
    (``show_progress``, labelled ``desc``)."""

    instruction: str | None
    max_length: int | None
    cache: VectorCache | None
    chunk: int
    show_progress: bool
    desc: str


def _cached(
    encoder: Encoder,
    texts: Sequence[str],
    variants: dict[str, str],
    encode_chunk: Callable[[Sequence[str], str | None, int], dict[str, np.ndarray]],
    *,
    query: bool = False,
    instruction: str | None = None,
    max_length: int | None = None,
    cache: VectorCache | None = None,
    chunk: int = DEFAULT_CHUNK,
    show_progress: bool = False,
    desc: str = "encode",
) -> dict[str, np.ndarray]:
    """:func:`_encode_chunked` under the key of ``texts`` as the encoder reads them (its prefix
    for ``instruction`` and ``query``, the max length, its dtype); ``encode_chunk(block,
    instruction, max_length)`` encodes a block of texts."""
    cache = cache or VectorCache(None)
    length = max_length or encoder.config.max_length
    key = texts_key(
        texts,
        prefix=encoder.config.prefix(instruction, query=query),
        max_length=length,
        dtype=encoder.dtype,
    )
    meta: dict[str, object] = {
        "encoder": encoder.config.name,
        "instruction": instruction,
        "max_length": length,
    }
    return _encode_chunked(
        variants, texts, key, cache, lambda block: encode_chunk(block, instruction, length),
        meta=meta, chunk=chunk, show_progress=show_progress, desc=desc,
    )  # fmt: skip


def encode_cached(
    encoder: Encoder, texts: Sequence[str], *, query: bool = False, **options: Unpack[CacheOptions]
) -> np.ndarray:
    """``encoder.encode(texts, instruction, max_length=..., query=...)`` through the cache
    (``query``: the texts are queries, which get the encoder's query prompt when it has one).

    A standardised encoder (``config.standardize``, normalised output) shares the cache of its
    unstandardised self: the statistics are applied to the cached unit vectors, so fitting or
    refitting them costs no encoding pass."""
    config = encoder.config
    shared = config.standardize is not None and config.normalize
    if shared:
        config = config.model_copy(update={"standardize": None})

    def run(block: Sequence[str], instruction: str | None, length: int) -> dict[str, np.ndarray]:
        if shared:  # what the unstandardised encoder returns: unit pooled vectors
            pooled = encoder.encode_pooled(
                block, instruction=instruction, max_length=length, query=query
            )
            return {"main": l2_normalize(pooled)}
        return {
            "main": encoder.encode(block, instruction=instruction, max_length=length, query=query)
        }

    out = _cached(encoder, texts, {"main": config.fingerprint()}, run, query=query, **options)
    return encoder.finish(out["main"]) if shared else out["main"]


def pool_variants(
    encoder: Encoder,
    texts: Sequence[str],
    poolings: Sequence[str],
    *,
    instruction: str | None = None,
    max_length: int | None = None,
) -> dict[str, np.ndarray]:
    """One forward pass, several simple pooling modes: what ``encode`` would return for the same
    config with ``pooling`` set to each mode (same tokenisation, batching and masks)."""
    import torch

    from encoders.pooling import pool

    bad = [p for p in poolings if p not in SIMPLE_POOLINGS]
    if bad:
        raise ValueError(f"pool_variants handles {SIMPLE_POOLINGS}, not {bad}")
    items = encoder.tokenize(texts, instruction, max_length or encoder.config.max_length)
    out: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        for order in encoder.batches(items):
            batch = encoder.collate([items[i] for i in order])
            hidden = encoder.hidden_states(batch).last_hidden_state  # type: ignore[attr-defined]
            for mode in poolings:
                vecs = pool(hidden, batch["attention_mask"], batch["pool_mask"], mode)
                if mode not in out:
                    out[mode] = np.zeros((len(items), vecs.shape[1]), dtype=np.float32)
                out[mode][order] = vecs.float().cpu().numpy()
    if encoder.config.normalize:
        out = {m: l2_normalize(v) for m, v in out.items()}
    return out


def variant_config(encoder: Encoder, pooling: str) -> EncoderConfig:
    return encoder.config.model_copy(update={"pooling": pooling})


def encode_variants_cached(
    encoder: Encoder,
    texts: Sequence[str],
    poolings: Sequence[str],
    **options: Unpack[CacheOptions],
) -> dict[str, np.ndarray]:
    """:func:`pool_variants` through the cache; each mode is cached under the fingerprint of the
    config with that pooling, so it is shared with :func:`encode_cached` on that config."""
    variants = {p: variant_config(encoder, p).fingerprint() for p in poolings}

    def run(block: Sequence[str], instruction: str | None, length: int) -> dict[str, np.ndarray]:
        return pool_variants(encoder, block, poolings, instruction=instruction, max_length=length)

    return _cached(encoder, texts, variants, run, **options)

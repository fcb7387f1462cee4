"""Which encoder specs the API may load for a collection it is asked to search.

A collection's metadata is data, possibly written by someone else, so a recorded spec is loaded
only when it is a preset name (:data:`encoders.registry.PRESETS`, bundled or packaged),
``EMBER_ENCODER`` itself, or a folder whose real path (symlinks resolved) lies inside one of the
allowed roots: ``EMBER_ENCODER``'s folder, ``EMBER_JOB_OUTPUT_DIR`` (default
``<data_dir>/jobs-out``, where retrain candidates are written) or the packaged presets. Anything
else is refused (409, naming the rule); so is a build that records no spec for a fingerprint the
server does not already serve (:mod:`search_api.served`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from indexer.pipeline import BUILD_INFO_KEY
from indexer.search import EncoderMismatchError
from indexer.store import SOURCE_META_KEY

if TYPE_CHECKING:
    from search_api.settings import ApiSettings


class EncoderUnavailableError(EncoderMismatchError):
    """The collection's encoder is not served and cannot be loaded (no spec, a refused spec,
    a failed load): 409 as before."""


def recorded_encoder(meta: Mapping[str, Any], fingerprint: str) -> tuple[str | None, str | None]:
    """``(spec, name)`` of the encoder a build's metadata records for ``fingerprint``: the
    index job's spec (``ember_source``), else a preset named by the ``build`` record."""
    presets = _presets()
    spec = name = None
    build = meta.get(BUILD_INFO_KEY)
    if isinstance(build, Mapping) and isinstance(build.get("encoder"), str):
        name = str(build["encoder"])
        if name in presets and build.get("fingerprint") in (None, fingerprint):
            spec = name
    record = meta.get(SOURCE_META_KEY)
    encoder = record.get("encoder") if isinstance(record, Mapping) else None
    if (
        isinstance(encoder, Mapping)
        and isinstance(encoder.get("spec"), str)
        and encoder["spec"]
        and encoder.get("fingerprint") in (None, fingerprint)
    ):
        spec = str(encoder["spec"])
    return spec, name


def _presets() -> dict[str, Any]:
    # encoders.registry imports torch: only once a collection's encoder is looked up
    from encoders.registry import PRESETS

    return PRESETS


def allowed_roots(settings: ApiSettings) -> list[Path]:
    """Folders whose encoders may be loaded because a collection records them."""
    from encoders.registry import PACKAGED  # torch, as in _presets

    roots = [settings.job_output_root, PACKAGED]
    default = Path(settings.encoder).expanduser()
    if settings.encoder not in _presets() and default.is_dir():
        roots.insert(0, default)
    return [root.resolve() for root in roots]


def check_spec(spec: str, settings: ApiSettings) -> str:
    """``spec`` when this server may load it (a preset, ``EMBER_ENCODER``, a folder inside
    :func:`allowed_roots`), as it should be loaded; else :class:`EncoderUnavailableError`."""
    if spec in _presets() or spec == settings.encoder:
        return spec
    path = Path(spec).expanduser()
    if path.is_absolute():
        real = path.resolve()
        if any(real == root or real.is_relative_to(root) for root in allowed_roots(settings)):
            return str(real)
    raise EncoderUnavailableError(
        f"the recorded encoder {spec!r} is not one this server loads: only presets, "
        "EMBER_ENCODER and encoder folders inside EMBER_ENCODER's folder, EMBER_JOB_OUTPUT_DIR "
        "or the packaged presets are loaded for a collection"
    )

"""Trainers for the worker tests, loaded by worker processes through ``EMBER_TRAINER_MODULES``.

``export-config`` trains nothing: it writes the configured encoder's ``encoder_config.json`` into
``params["output"]`` (an encoder directory that ``load_encoder`` accepts). Real trainers (MNTP,
SimCSE, ...) plug in the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def export_config(params: dict[str, Any]) -> Path:
    from encoders import resolve_config
    from workers import runtime

    out = Path(params["output"])
    config = resolve_config(str(params.get("encoder") or runtime.settings().encoder))
    config.save(out)
    return out


TRAINERS = {"export-config": export_config}

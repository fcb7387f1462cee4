"""A deterministic trainer for the retrain tests (``EMBER_TRAINER_MODULES``).

``copy-encoder`` "trains" by copying the encoder folder ``params["source"]`` to ``params["out"]``
and writes the ``from`` it was given to ``trained_from.json``, so a test controls exactly how
good the candidate is and can check the pipeline trained from the serving encoder. A real
trainer on a tiny random model cannot be made to win or lose reliably in a few CPU seconds.

``params["delay_s"]`` makes it write a partial folder first and sleep before completing it, so a
test can kill the worker mid-training and check that the rerun starts from a clean folder.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any


def copy_encoder(params: dict[str, Any]) -> Path:
    out = Path(params["out"])
    delay = float(params.get("delay_s") or 0)
    if delay:
        out.mkdir(parents=True)  # fails if a killed run's partial folder was left behind
        (out / "partial").write_text("training")
        time.sleep(delay)
        shutil.rmtree(out)
    shutil.copytree(params["source"], out)
    (out / "trained_from.json").write_text(json.dumps({"from": params.get("from")}))
    return out


TRAINERS = {"copy-encoder": copy_encoder}

"""Shared test setup: quiet transformers, and a session cache for converted models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests compare vectors at 1e-5: every encoder runs in fp32 whatever its config ("auto" would be
# bf16 on a CPU with bf16 units). Tests of the dtype choice itself set or unset this.
os.environ["EMBER_DTYPE"] = "float32"

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA} (CI puts shared/ beside the repo)")
    return SHARED_DATA

"""Drive the reference venv (``.venv-ref``: llm2vec 0.2.3, transformers 4.44.2) from Ember's venv.

- :func:`ensure_ref_env` builds it with ``bench/ref_env.sh`` when missing;
- :func:`run_ref` runs a script from ``bench/_ref/`` in it with a JSON spec;
- :func:`ref_view` makes a folder that transformers 4.44 reads correctly from an HF folder that
  transformers 5 wrote (the weights are linked, not copied).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REF_VENV = Path(os.environ.get("EMBER_REF_VENV", REPO / ".venv-ref"))
REF_DIR = REPO / "bench" / "_ref"


def ref_python() -> Path:
    return REF_VENV / "bin" / "python"


def ensure_ref_env() -> Path:
    """Build ``.venv-ref`` with ``bench/ref_env.sh`` unless it is ready; return its python."""
    subprocess.run(["bash", str(REPO / "bench" / "ref_env.sh"), str(REF_VENV)], check=True)
    return ref_python()


def run_ref(
    script: str, spec: dict[str, Any], workdir: Path, *, nice: bool = False, threads: int = 0
) -> str:
    """Run ``bench/_ref/<script> SPEC.json`` in the reference venv; return its stdout."""
    blob = json.dumps(spec, sort_keys=True)
    spec_file = workdir / f"{Path(script).stem}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}.json"
    spec_file.write_text(blob)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": ""}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [str(ref_python()), str(REF_DIR / script), str(spec_file)]
    proc = subprocess.run(
        ["nice", *cmd] if nice else cmd, capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed in {REF_VENV}:\n{proc.stderr[-4000:]}")
    return proc.stdout


def legacy_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Add the flat keys transformers 4.44 reads to a config.json written by transformers 5.

    transformers 5 nests ``rope_theta`` under ``rope_parameters``; 4.44 ignores that key and would
    silently fall back to its default theta (10000), so it is written explicitly.
    """
    out = dict(cfg)
    rope = cfg.get("rope_parameters") or {}
    if "rope_theta" in rope:
        out["rope_theta"] = float(rope["rope_theta"])
    if rope.get("rope_type", "default") == "default":
        out.setdefault("rope_scaling", None)
    else:
        out.setdefault("rope_scaling", {k: v for k, v in rope.items() if k != "rope_theta"})
    out["torch_dtype"] = cfg.get("dtype") or cfg.get("torch_dtype") or "float32"
    return out


def legacy_tokenizer_json(data: dict[str, Any]) -> dict[str, Any]:
    """tokenizers >= 0.20 writes BPE merges as pairs; 0.19 reads only ``"a b"`` strings."""
    model = dict(data["model"])
    merges = model.get("merges") or []
    if merges and isinstance(merges[0], list):
        if any(" " in part for pair in merges for part in pair):
            raise ValueError("a merge part contains a space: cannot write legacy merges")
        model["merges"] = [" ".join(pair) for pair in merges]
    return {**data, "model": model}


def ref_view(src: Path, dst: Path) -> Path:
    """A folder transformers 4.44 reads as the same model and tokenizer as ``src``.

    Weights are symlinked; ``config.json``, ``tokenizer.json`` and ``tokenizer_config.json`` are
    rewritten (explicit rope_theta; string merges; the generic fast tokenizer class without
    ``token_type_ids``, which decoder models do not take). Callers check that both stacks give
    identical token ids.
    """
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.suffix == ".safetensors" or f.name.endswith(".safetensors.index.json"):
            link = dst / f.name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(f.resolve())
    cfg = json.loads((src / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps(legacy_config(cfg), indent=2))
    tok = json.loads((src / "tokenizer.json").read_text())
    (dst / "tokenizer.json").write_text(json.dumps(legacy_tokenizer_json(tok)))
    tcfg = json.loads((src / "tokenizer_config.json").read_text())
    keep = {
        k: tcfg[k]
        for k in ("bos_token", "eos_token", "pad_token", "unk_token", "model_max_length")
        if k in tcfg
    }
    keep["tokenizer_class"] = "PreTrainedTokenizerFast"
    keep["model_input_names"] = ["input_ids", "attention_mask"]
    keep["clean_up_tokenization_spaces"] = False
    (dst / "tokenizer_config.json").write_text(json.dumps(keep, indent=2))
    return dst


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [N, D] arrays."""
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.asarray(num / np.maximum(den, 1e-30))

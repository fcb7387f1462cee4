"""Resumable checkpoints: ``out/checkpoints/step-N/`` holds ``trainable.safetensors`` (every
trainable tensor by parameter name) and ``trainer_state.pt`` (optimizer and scheduler state, the
step, the RNG states, the data position and the run's params); see :mod:`encoders.training.base`.
"""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from encoders.training.params import RESUMABLE_CHANGES, TrainParams
from encoders.training.run import TrainingError

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"


class TrainState(NamedTuple):
    """What a checkpoint holds besides the RNG states: the trainable tensors by parameter name,
    the optimizer and the learning-rate scheduler."""

    named: list[tuple[str, nn.Parameter]]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler


def _rng_states() -> dict[str, Any]:
    py = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [name, torch.from_numpy(np.asarray(keys).copy()), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _restore_rng(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy(), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def checkpoint_steps(out: Path) -> list[int]:
    folder = out / CHECKPOINTS
    if not folder.is_dir():
        return []
    steps = []
    for entry in folder.iterdir():
        numbered = entry.name.startswith("step-") and entry.name[5:].isdigit()
        if numbered and (entry / "trainer_state.pt").is_file():
            steps.append(int(entry.name[5:]))
    return sorted(steps)


def save_checkpoint(
    out: Path,
    stage: str,
    params: TrainParams,
    step: int,
    run: TrainState,
) -> None:
    """Write ``out/checkpoints/step-N`` (atomically: a temporary folder renamed) and keep the
    newest ``params.save_total_limit``."""
    root = out / CHECKPOINTS
    final = root / f"step-{step}"
    tmp = root / f".step-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(
        {n: t.detach().contiguous() for n, t in run.named}, str(tmp / "trainable.safetensors")
    )
    state = {
        "stage": stage,
        "step": step,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "rng": _rng_states(),
        "data_position": {"step": step, "examples_seen": step * params.batch_size},
        "params": params.model_dump(mode="json"),
    }
    torch.save(state, tmp / "trainer_state.pt")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in checkpoint_steps(out)[: -params.save_total_limit]:
        shutil.rmtree(root / f"step-{old}", ignore_errors=True)


def load_checkpoint(
    out: Path,
    stage: str,
    params: TrainParams,
    step: int,
    run: TrainState,
) -> int:
    """Restore checkpoint ``step`` into ``run`` (trainables, optimizer, scheduler) and the RNGs;
    returns the step. A checkpoint of another stage or of incompatible params is refused."""
    folder = out / CHECKPOINTS / f"step-{step}"
    state = torch.load(folder / "trainer_state.pt", weights_only=False)
    if state.get("stage") != stage:
        raise TrainingError(f"{folder} is a {state.get('stage')!r} checkpoint, not {stage}")
    saved = state["params"]
    now = params.model_dump(mode="json")
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k])
    if changed:
        raise TrainingError(
            f"--resume: {', '.join(changed)} differ from the checkpointed run "
            f"({folder}); use the same settings or --overwrite"
        )
    if int(state["step"]) > params.max_steps:
        raise TrainingError(
            f"--resume: the checkpoint is at step {state['step']}, past --max-steps "
            f"{params.max_steps}"
        )
    if saved.get("max_steps") != now["max_steps"]:
        log.warning(
            "resuming with --max-steps %s (was %s): the learning-rate decay re-targets it",
            now["max_steps"],
            saved.get("max_steps"),
        )
    tensors = load_file(str(folder / "trainable.safetensors"))
    names = {n for n, _ in run.named}
    if set(tensors) != names:
        raise TrainingError(f"{folder}: its tensors do not match this model's trainables")
    with torch.no_grad():
        for n, param in run.named:
            param.copy_(tensors[n])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    _restore_rng(state["rng"])
    return int(state["step"])

"""Adapter training: MNTP, unsupervised SimCSE, supervised contrastive (GradCache, trainable
poolers) and LLaRA EBAE/EBAR pre-training, all through peft LoRA.

Every stage reads an encoder (preset or folder), merges its adapter stack, trains a new adapter
and writes a new encoder folder; ``run(name, params)`` is the one entry point for the CLI
(``ember train <name>``) and for worker jobs (``TRAINERS``: name -> callable(params) -> folder).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from encoders.training.base import StepCallback, Trainer, TrainingError
from encoders.training.llara import LlaraTrainer
from encoders.training.mntp import MntpTrainer
from encoders.training.simcse import SimcseTrainer
from encoders.training.supervised import SupervisedTrainer

STAGES: dict[str, type[Trainer]] = {
    "mntp": MntpTrainer,
    "simcse": SimcseTrainer,
    "supervised": SupervisedTrainer,
    "llara": LlaraTrainer,
}


def make_trainer(
    name: str, params: Mapping[str, Any], callback: StepCallback | None = None
) -> Trainer:
    """Validate ``params`` for stage ``name`` and return its trainer (not yet run)."""
    if name not in STAGES:
        raise TrainingError(f"unknown training stage {name!r}; choose from {', '.join(STAGES)}")
    klass = STAGES[name]
    try:
        typed = klass.params_type.model_validate(dict(params))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "params"
        raise TrainingError(f"{name} params: {where}: {first['msg']}") from None
    return klass(typed, callback)


def run(name: str, params: Mapping[str, Any]) -> Path:
    """Train stage ``name`` with ``params`` (see :mod:`encoders.training.params`); returns the
    output encoder folder (loadable with ``Encoder.load``)."""
    return make_trainer(name, params).run()


def _stage_runner(name: str) -> Callable[[dict[str, Any]], Path]:
    def train(params: dict[str, Any]) -> Path:
        return run(name, params)

    train.__name__ = f"train_{name}"
    train.__doc__ = f"Worker job: ``run({name!r}, params)``."
    return train


train_mntp = _stage_runner("mntp")
train_simcse = _stage_runner("simcse")
train_supervised = _stage_runner("supervised")
train_llara = _stage_runner("llara")

# For workers.training (EMBER_TRAINER_MODULES=encoders.training): name -> callable(params).
TRAINERS: dict[str, Callable[[dict[str, Any]], Path]] = {
    "mntp": train_mntp,
    "simcse": train_simcse,
    "supervised": train_supervised,
    "llara": train_llara,
}

__all__ = ["STAGES", "TRAINERS", "Trainer", "TrainingError", "make_trainer", "run"]

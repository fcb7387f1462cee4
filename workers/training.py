"""Training jobs: a registry of trainers by name, run by the ``ember.train`` task (queue ``train``).

A trainer is ``callable(params: dict) -> output folder`` (a new encoder directory). Trainers come
from modules with a ``TRAINERS`` mapping of name -> callable, so such a module needs no import of
``workers`` and the layering holds: :mod:`encoders.training` (``mntp``, ``simcse``,
``supervised``, ``llara``; parameters in :mod:`encoders.training.params`) is always loaded, and
``EMBER_TRAINER_MODULES`` adds more. :func:`register_trainer` adds one from code. Asking for an
unknown name fails with the list of known ones.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from encoders.errors import EmberError

Trainer = Callable[[dict[str, Any]], str | Path]

BUILTIN_TRAINER_MODULES = ("encoders.training",)

_lock = threading.Lock()
_trainers: dict[str, Trainer] = {}


class UnknownTrainerError(EmberError, LookupError):
    status = 422

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        listing = ", ".join(known) if known else "none registered (set EMBER_TRAINER_MODULES)"
        super().__init__(f"unknown trainer {name!r}; available: {listing}")

    def __str__(self) -> str:
        return str(self.args[0])


class TrainerError(EmberError, RuntimeError):
    """A trainer module or a trainer's result is unusable."""


def register_trainer(name: str, trainer: Trainer, *, replace: bool = False) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("trainer name must be a non-empty string")
    if not callable(trainer):
        raise TypeError(f"trainer {name!r} must be callable, got {type(trainer).__name__}")
    with _lock:
        if name in _trainers and _trainers[name] is not trainer and not replace:
            raise ValueError(f"trainer {name!r} is already registered")
        _trainers[name] = trainer


def unregister_trainer(name: str) -> None:
    with _lock:
        _trainers.pop(name, None)


def available() -> list[str]:
    with _lock:
        return sorted(_trainers)


def load_trainer_modules(modules: Iterable[str]) -> list[str]:
    """Import each module and (re-)register its ``TRAINERS``; returns their names."""
    added: list[str] = []
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise TrainerError(
                f"EMBER_TRAINER_MODULES: cannot import {module_name!r}: {exc}"
            ) from exc
        table = getattr(module, "TRAINERS", None)
        if not isinstance(table, Mapping):
            raise TrainerError(
                f"EMBER_TRAINER_MODULES: {module_name!r} has no TRAINERS mapping "
                "of name -> callable"
            )
        for name, trainer in table.items():
            register_trainer(str(name), trainer, replace=True)
            added.append(str(name))
    return added


def load_all_trainers(extra_modules: Iterable[str] = ()) -> list[str]:
    """The built-in trainers plus those of ``extra_modules`` (``EMBER_TRAINER_MODULES``)."""
    return load_trainer_modules([*BUILTIN_TRAINER_MODULES, *extra_modules])


def get_trainer(name: str) -> Trainer:
    with _lock:
        trainer = _trainers.get(name)
        if trainer is None:
            raise UnknownTrainerError(name, sorted(_trainers))
        return trainer


def run_trainer(name: str, params: Mapping[str, Any]) -> Path:
    """Run trainer ``name``; returns the output folder it wrote (checked to exist)."""
    trainer = get_trainer(name)
    out = trainer(dict(params))
    if not isinstance(out, str | Path):
        raise TrainerError(
            f"trainer {name!r} returned {type(out).__name__}, expected a folder path"
        )
    folder = Path(out)
    if not folder.is_dir():
        raise TrainerError(f"trainer {name!r} returned {str(folder)!r}, which is not a folder")
    return folder

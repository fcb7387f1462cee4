"""Job path confinement: every path a job reads or writes stays inside a configured root.

A job's paths are opened by whoever runs the job (a worker, or the API process), not by the
client that sent it. So the API checks them when a job is submitted (422 naming the field), and
a worker checks them again before it runs a job that came through the broker, so a message put
on the broker directly meets the same rules. Both call this module.

* inputs: an index job's corpus ``path``; a training job's ``data``, ``corpus_pairs`` and
  ``scored_pairs``, and its ``from`` unless that is a preset name or the server's own
  ``EMBER_ENCODER``: inside ``EMBER_JOB_INPUT_DIR`` (unset: input paths are refused); ``from``
  may also be an earlier job's output;
* outputs: a training job's ``out``: inside ``EMBER_JOB_OUTPUT_DIR`` (default
  ``<data_dir>/jobs-out``).

Relative paths are taken relative to the root. Paths are resolved after symlinks (a link inside
the root that points out of it is refused) and NUL characters are refused. The checked paths
come back absolute and resolved, and the job carries them so.

Jobs run in-process by the CLI without a broker are not checked (the user running it can read
those files anyway); the API's own in-process jobs are checked by the API before they start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from encoders.errors import EmberError

if TYPE_CHECKING:
    from workers.settings import WorkerSettings

INPUT_SETTING = "EMBER_JOB_INPUT_DIR"
OUTPUT_SETTING = "EMBER_JOB_OUTPUT_DIR"
# training parameters that name paths (encoders.training.params; ``from_encoder`` is the field
# name behind the ``from`` alias, accepted too)
TRAIN_FROM_KEYS = ("from", "from_encoder")
TRAIN_INPUT_KEYS = ("data", "corpus_pairs", "scored_pairs")
TRAIN_OUTPUT_KEYS = ("out",)

Loc = tuple[str | int, ...]


class JobPathError(EmberError, ValueError):
    """A job path outside its root (or unusable); ``loc`` names the field, e.g. ``params.out``."""

    status = 422

    def __init__(self, loc: Loc, reason: str) -> None:
        self.loc = loc
        self.reason = reason
        super().__init__(f"{'.'.join(str(p) for p in loc)}: {reason}")


@dataclass(frozen=True)
class Root:
    path: Path | None
    setting: str


def input_root(settings: WorkerSettings) -> Root:
    return Root(settings.job_input_dir, INPUT_SETTING)


def output_root(settings: WorkerSettings) -> Root:
    return Root(settings.job_output_root, OUTPUT_SETTING)


def confine(
    raw: object, roots: Sequence[Root], loc: Loc, *, must_exist: bool, output: bool = False
) -> str:
    """``raw`` resolved inside one of ``roots`` (relative paths: inside the first one set), as
    an absolute path; an output must lie below its root, an input may be the root itself."""
    if not isinstance(raw, str) or not raw:
        raise JobPathError(loc, "expected a path (a non-empty string)")
    if "\x00" in raw:
        raise JobPathError(loc, "path must not contain NUL characters")
    bases = [root.path for root in roots if root.path is not None]
    if not bases:
        raise JobPathError(loc, f"job paths are disabled on this server (set {roots[0].setting})")
    try:
        resolved = [Path(base).expanduser().resolve() for base in bases]
        target = (resolved[0] / raw).resolve()
        exists = target.exists()
    except (OSError, ValueError) as exc:  # an undecodable name (a lone surrogate), too long, ...
        raise JobPathError(loc, f"unusable path: {exc}") from None
    inside = any(base in target.parents or (target == base and not output) for base in resolved)
    if not inside:
        where = " or ".join(root.setting for root in roots if root.path is not None)
        raise JobPathError(loc, f"path must be inside {where}")
    if must_exist and not exists:
        raise JobPathError(loc, f"no such file or folder: {raw!r}")
    return str(target)


def confine_input(
    settings: WorkerSettings, raw: object, loc: Loc, *, must_exist: bool = True
) -> str:
    return confine(raw, [input_root(settings)], loc, must_exist=must_exist)


def confine_train_params(settings: WorkerSettings, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with every path confined and made absolute (other keys unchanged)."""
    # a local import: workers.paths is imported on the API's light path (no torch there)
    from encoders.registry import PRESETS

    inputs, outputs = input_root(settings), output_root(settings)
    checked = dict(params)
    for key in TRAIN_FROM_KEYS:
        value = checked.get(key)
        named = isinstance(value, str) and (value in PRESETS or value == settings.encoder)
        if key in checked and not named:
            checked[key] = confine(value, [inputs, outputs], ("params", key), must_exist=True)
    for key in TRAIN_INPUT_KEYS:
        if key not in checked:
            continue
        value = checked[key]
        if isinstance(value, list):
            checked[key] = [
                confine(v, [inputs], ("params", key, n), must_exist=True)
                for n, v in enumerate(value)
            ]
        elif isinstance(value, str):
            checked[key] = confine(value, [inputs], ("params", key), must_exist=True)
        else:
            raise JobPathError(("params", key), "expected a path or a list of paths")
    for key in TRAIN_OUTPUT_KEYS:
        if key in checked:
            loc = ("params", key)
            checked[key] = confine(checked[key], [outputs], loc, must_exist=False, output=True)
    return checked

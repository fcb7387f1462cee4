"""The trainer every stage shares: AdamW, warmup + linear decay, gradient clipping, seeds,
fp32 on CPU, tqdm progress (loss, s/step, ETA), a JSONL log, and resumable checkpoints.

Checkpoint ``out/checkpoints/step-N/``:
- ``trainable.safetensors``: every trainable tensor by parameter name (the LoRA adapter, peft
  trainable tokens, a trainable pooler);
- ``trainer_state.pt``: optimizer and scheduler state, the step, the RNG states (python, numpy,
  torch), the data position and the run's params (a resumed run must agree with them).

Data order is a function of (seed, step) (see :mod:`encoders.training.data`), so restoring the
step restores the data position; restoring the RNG states restores the dropout masks.
``--resume`` therefore reproduces the uninterrupted run (tests/encoders/training/test_stages.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import random
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from encoders.config import CONFIG_FILE, Attention, EncoderConfig
from encoders.encoder import Encoder
from encoders.errors import EmberError
from encoders.hardware import has_fast_bf16
from encoders.registry import resolve_config
from encoders.training.model import (
    ADAPTER_DIR,
    BASE_DIR,
    POOLER_DIR,
    STACK_DIR,
    LoraSettings,
    StageModel,
    build_stage_model,
    save_output,
)
from encoders.training.params import RESUMABLE_CHANGES, TrainParams

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LOCK_FILE = ".train.lock"
LOG_FILE = "train_log.jsonl"
ARGS_FILE = "train_args.json"
StepCallback = Callable[[int, dict[str, float]], None]


class TrainingError(EmberError, RuntimeError):
    """A run that cannot start or continue (bad output folder, incompatible checkpoint)."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"--device {name}: CUDA is not available")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run: None (fp32), or bf16 when asked or, for ``auto``, when the
    device has fast bf16 (an AVX2-only CPU would run bf16 several times slower than fp32)."""
    if precision == "bf16" or (precision == "auto" and has_fast_bf16(device)):
        return torch.bfloat16
    return None


def warmup_linear(total: int, warmup: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


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


class Trainer(ABC):
    """One training stage. Subclasses load their data in :meth:`prepare` and compute the loss
    (and call backward) in :meth:`train_step`."""

    name: ClassVar[str]
    params_type: ClassVar[type[TrainParams]]
    need_lm_head: ClassVar[bool] = False
    default_attention: ClassVar[Attention] = "bidirectional"

    def __init__(self, params: TrainParams, callback: StepCallback | None = None) -> None:
        self.params = params
        self.out = Path(params.out).expanduser().resolve()
        self.callback = callback
        self._stage: StageModel | None = None
        self.seconds_per_step: float | None = None

    # ---- hooks ----------------------------------------------------------------------------
    @abstractmethod
    def read_data(self) -> None:
        """Read and check the data files (before the model loads: bad data fails fast)."""

    @abstractmethod
    def prepare(self) -> None:
        """Tokenise the data (the model is built)."""

    @abstractmethod
    def train_step(self, step: int) -> dict[str, float]:
        """Compute the loss of batch ``step`` and backpropagate it; return metrics (``loss``)."""

    def output_overrides(self, input_config: EncoderConfig) -> dict[str, Any]:
        """Attention / pooling / kind / name of the output encoder."""
        p = self.params
        attention = p.attention or self.default_attention
        if p.pooling:
            pooling = p.pooling
        elif input_config.attention == "bidirectional":
            pooling = input_config.pooling
        else:
            pooling = "mean"
        return {
            "attention": attention,
            "pooling": pooling,
            "name": p.name or f"{input_config.name}+{self.name}",
        }

    def lora_settings(self) -> LoraSettings | None:
        p = self.params
        return LoraSettings(p.lora_r, p.lora_alpha, p.lora_dropout, list(p.target_modules))

    def build(self, input_config: EncoderConfig) -> StageModel:
        return build_stage_model(
            input_config,
            stage=self.name,
            lora=self.lora_settings(),
            need_lm_head=self.need_lm_head,
            output_overrides=self.output_overrides(input_config),
            seed=self.params.seed,
        )

    def extra_modules(self) -> dict[str, nn.Module]:
        """Trainable modules outside the peft model (a pooler), saved with the checkpoint."""
        return {}

    def new_pooler(self) -> nn.Module | None:
        return None

    # ---- properties -----------------------------------------------------------------------
    @property
    def stage(self) -> StageModel:
        if self._stage is None:
            raise TrainingError("the model is not built yet")
        return self._stage

    @property
    def encoder(self) -> Encoder:
        return self.stage.encoder

    def trainable(self) -> list[tuple[str, nn.Parameter]]:
        named = [(n, p) for n, p in self.stage.peft_model.named_parameters() if p.requires_grad]
        for prefix, module in self.extra_modules().items():
            named += [(f"{prefix}.{n}", p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise TrainingError(f"{self.name}: nothing to train")
        return sorted(named, key=lambda item: item[0])

    def train_mode(self, on: bool) -> None:
        self.stage.peft_model.train(on)
        for module in self.extra_modules().values():
            module.train(on)
        if self.encoder.pooler is not None and isinstance(self.encoder.pooler, nn.Module):
            self.encoder.pooler.train(on and bool(self.extra_modules()))

    # ---- the run --------------------------------------------------------------------------
    def _prepare_output(self) -> None:
        p = self.params
        out = self.out
        source = Path(p.from_encoder).expanduser()
        if source.exists() and source.resolve() == out:
            raise TrainingError("--out must differ from the input encoder folder")
        has_ckpt = bool(checkpoint_steps(out))
        has_encoder = (out / CONFIG_FILE).is_file()
        if p.overwrite:
            for entry in (CHECKPOINTS, ADAPTER_DIR, STACK_DIR, BASE_DIR, POOLER_DIR):
                shutil.rmtree(out / entry, ignore_errors=True)
            for file in (CONFIG_FILE, LOG_FILE, ARGS_FILE):
                (out / file).unlink(missing_ok=True)
        elif has_ckpt and not p.resume:
            raise TrainingError(
                f"{out} holds checkpoints of an earlier run: pass --resume to continue it or "
                "--overwrite to start again"
            )
        elif has_encoder and not p.resume:
            raise TrainingError(
                f"{out} already holds an encoder: pass --overwrite or choose another folder"
            )
        out.mkdir(parents=True, exist_ok=True)

    def setup(self) -> None:
        """Read the data, build the model (on the device), tokenise."""
        self.read_data()
        self._stage = self.build(resolve_config(self.params.from_encoder))
        device = resolve_device(self.params.device)
        if device.type != "cpu":
            self.encoder.to(device)
            if self.stage.lm_head is not None:
                self.stage.lm_head.to(device)
        self.prepare()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One run per output folder: a second run (or a resumed copy of a running job) is
        refused instead of interleaving checkpoints and logs."""
        self.out.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                raise TrainingError(
                    f"{self.out} is in use by another training run (pid {holder})"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    def run(self) -> Path:
        if self.out.exists() and not self.out.is_dir():
            raise TrainingError(f"--out {self.out} exists and is not a folder")
        with self._locked():
            return self._run()

    def _run(self) -> Path:
        p = self.params
        self._prepare_output()
        if p.threads:
            torch.set_num_threads(p.threads)
        seed_everything(p.seed)
        self.setup()
        named = self.trainable()
        params = [param for _, param in named]
        optimizer = torch.optim.AdamW(params, lr=p.lr, weight_decay=p.weight_decay)
        warmup = math.ceil(p.warmup_ratio * p.max_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear(p.max_steps, warmup))
        start = 0
        if p.resume:
            steps = checkpoint_steps(self.out)
            if steps:
                start = self._load_checkpoint(steps[-1], named, optimizer, scheduler)
                log.info("resumed %s from step %d", self.name, start)
            else:
                log.info("--resume: no checkpoint in %s, starting from step 0", self.out)
        self._trim_log(start)
        device = next(self.stage.peft_model.parameters()).device
        amp = autocast_dtype(p.precision, device)
        began = time.monotonic()
        metrics: dict[str, float] = {}
        with (
            tqdm(
                total=p.max_steps,
                initial=start,
                desc=f"train {self.name}",
                unit="step",
                disable=not p.progress,
                dynamic_ncols=True,
                mininterval=1.0,
            ) as bar,
            (self.out / LOG_FILE).open("a", encoding="utf-8") as log_file,
        ):
            for step in range(start, p.max_steps):
                self.train_mode(True)
                optimizer.zero_grad(set_to_none=True)
                tick = time.monotonic()
                with torch.autocast(device.type, dtype=amp or torch.float32, enabled=bool(amp)):
                    metrics = self.train_step(step)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, p.max_grad_norm)
                optimizer.step()
                scheduler.step()
                metrics = {
                    **metrics,
                    "grad_norm": float(grad_norm.item()),
                    "lr": float(scheduler.get_last_lr()[0]),
                    "seconds": time.monotonic() - tick,
                }
                done = step + 1
                log_file.write(json.dumps({"step": done, **metrics}) + "\n")
                log_file.flush()
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}")
                if done % p.save_steps == 0 or done == p.max_steps:
                    self._save_checkpoint(done, named, optimizer, scheduler)
                if self.callback is not None:
                    self.callback(done, metrics)
        ran = p.max_steps - start
        if ran:
            self.seconds_per_step = (time.monotonic() - began) / ran
        self.train_mode(False)
        config = save_output(
            self.stage, self.out, live_adapter=p.live_adapter, pooler=self.new_pooler()
        )
        self._write_args(config, metrics)
        return self.out

    # ---- checkpoints ----------------------------------------------------------------------
    def _save_checkpoint(
        self,
        step: int,
        named: list[tuple[str, nn.Parameter]],
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> None:
        root = self.out / CHECKPOINTS
        final = root / f"step-{step}"
        tmp = root / f".step-{step}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(
            {n: t.detach().contiguous() for n, t in named}, str(tmp / "trainable.safetensors")
        )
        state = {
            "stage": self.name,
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_states(),
            "data_position": {"step": step, "examples_seen": step * self.params.batch_size},
            "params": self.params.model_dump(mode="json"),
        }
        torch.save(state, tmp / "trainer_state.pt")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in checkpoint_steps(self.out)[: -self.params.save_total_limit]:
            shutil.rmtree(root / f"step-{old}", ignore_errors=True)

    def _load_checkpoint(
        self,
        step: int,
        named: list[tuple[str, nn.Parameter]],
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> int:
        folder = self.out / CHECKPOINTS / f"step-{step}"
        state = torch.load(folder / "trainer_state.pt", weights_only=False)
        if state.get("stage") != self.name:
            raise TrainingError(f"{folder} is a {state.get('stage')!r} checkpoint, not {self.name}")
        saved = state["params"]
        now = self.params.model_dump(mode="json")
        changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k])
        if changed:
            raise TrainingError(
                f"--resume: {', '.join(changed)} differ from the checkpointed run "
                f"({folder}); use the same settings or --overwrite"
            )
        if int(state["step"]) > self.params.max_steps:
            raise TrainingError(
                f"--resume: the checkpoint is at step {state['step']}, past --max-steps "
                f"{self.params.max_steps}"
            )
        if saved.get("max_steps") != now["max_steps"]:
            log.warning(
                "resuming with --max-steps %s (was %s): the learning-rate decay re-targets it",
                now["max_steps"],
                saved.get("max_steps"),
            )
        tensors = load_file(str(folder / "trainable.safetensors"))
        names = {n for n, _ in named}
        if set(tensors) != names:
            raise TrainingError(f"{folder}: its tensors do not match this model's trainables")
        with torch.no_grad():
            for n, param in named:
                param.copy_(tensors[n])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _restore_rng(state["rng"])
        return int(state["step"])

    def _trim_log(self, start: int) -> None:
        file = self.out / LOG_FILE
        if not file.is_file():
            return
        kept = [
            line
            for line in file.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= start
        ]
        file.write_text("".join(line + "\n" for line in kept))

    def _write_args(self, config: EncoderConfig, metrics: dict[str, float]) -> None:
        import peft
        import transformers

        record = {
            "stage": self.name,
            "params": self.params.model_dump(mode="json"),
            "input_encoder": self.stage.input_config.model_dump(mode="json"),
            "output_encoder": config.model_dump(mode="json"),
            "final": metrics,
            "seconds_per_step_last_session": self.seconds_per_step,
            "trainable_parameters": sum(p.numel() for _, p in self.trainable()),
            "versions": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "peft": peft.__version__,
            },
        }
        (self.out / ARGS_FILE).write_text(json.dumps(record, indent=2) + "\n")

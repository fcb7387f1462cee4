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
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from tqdm.auto import tqdm

from encoders.config import CONFIG_FILE, Attention, EncoderConfig
from encoders.encoder import Encoder
from encoders.registry import resolve_config
from encoders.training.checkpoints import CHECKPOINTS as CHECKPOINTS
from encoders.training.checkpoints import TrainState, load_checkpoint, save_checkpoint
from encoders.training.checkpoints import checkpoint_steps as checkpoint_steps
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
from encoders.training.params import TrainParams
from encoders.training.run import TrainingError as TrainingError
from encoders.training.run import autocast_dtype as autocast_dtype
from encoders.training.run import resolve_device as resolve_device
from encoders.training.run import seed_everything as seed_everything
from encoders.training.run import warmup_linear as warmup_linear

log = logging.getLogger(__name__)

LOCK_FILE = ".train.lock"
LOG_FILE = "train_log.jsonl"
ARGS_FILE = "train_args.json"
StepCallback = Callable[[int, dict[str, float]], None]


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
        run = TrainState(named, optimizer, scheduler)
        start = 0
        if p.resume:
            steps = checkpoint_steps(self.out)
            if steps:
                start = load_checkpoint(self.out, self.name, self.params, steps[-1], run)
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
                    save_checkpoint(self.out, self.name, self.params, done, run)
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

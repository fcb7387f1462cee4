"""Stage chaining, output folders, resumable checkpoints, the worker entry point."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from encoders import AdapterSpec, Encoder, EncoderConfig
from encoders.adapters import apply_adapters
from encoders.loading import load_base_model
from encoders.training import TRAINERS, make_trainer, run
from encoders.training.base import TrainingError, checkpoint_steps, resolve_device
from tests.encoders.training.conftest import SENTENCES, base_params


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def mntp_folder(bi_encoder: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("chain") / "mntp"
    params = base_params(bi_encoder, out, data_dir / "texts.jsonl", max_length=24, lr=1e-2)
    return run("mntp", params)


def test_next_stage_merges_the_previous_adapter_then_adds_its_own(
    mntp_folder: Path, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "simcse"
    trainer = make_trainer(
        "simcse", base_params(mntp_folder, out, data_dir / "texts.jsonl", batch_size=8, lr=1e-2)
    )
    trainer.run()
    config = EncoderConfig.load(out)
    assert [(Path(a.path).relative_to(out.resolve()), a.merged) for a in config.adapters] == [
        (Path("stack/00"), True),
        (Path("adapter"), True),
    ]
    raw = json.loads((out / "encoder_config.json").read_text())
    assert [a["path"] for a in raw["adapters"]] == ["stack/00", "adapter"]  # relative
    # The copy is the MNTP adapter; the stack applied by hand gives the same vectors.
    mntp_weights = load_file(str(mntp_folder / "adapter" / "adapter_model.safetensors"))
    copied = load_file(str(out / "stack" / "00" / "adapter_model.safetensors"))
    assert mntp_weights.keys() == copied.keys()
    assert all(torch.equal(mntp_weights[k], copied[k]) for k in copied)
    base = load_base_model(Path(config.base_model))
    model = apply_adapters(
        base,
        [AdapterSpec(path=str(mntp_folder / "adapter")), AdapterSpec(path=str(out / "adapter"))],
    )
    by_hand = Encoder(config, model, Encoder.load(out).tokenizer).encode(SENTENCES)
    reloaded = Encoder.load(out).encode(SENTENCES)
    np.testing.assert_allclose(reloaded, by_hand, atol=1e-6)
    # ... and reproduces the trained model's vectors.
    np.testing.assert_allclose(reloaded, trainer.encoder.encode(SENTENCES), atol=1e-5)
    # The output is self-contained: the input folder can go.
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    shutil.rmtree(out)
    np.testing.assert_allclose(Encoder.load(moved).encode(SENTENCES), reloaded, atol=1e-6)


def test_live_adapter_reproduces_vectors_exactly(
    bi_encoder: Path, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "live"
    params = base_params(
        bi_encoder, out, data_dir / "texts.jsonl", batch_size=8, lr=1e-2, live_adapter=True
    )
    trainer = make_trainer("simcse", params)
    trainer.run()
    assert EncoderConfig.load(out).adapters[-1].merged is False
    np.testing.assert_array_equal(
        Encoder.load(out).encode(SENTENCES), trainer.encoder.encode(SENTENCES)
    )


@pytest.mark.parametrize("stage", ["mntp", "simcse", "supervised", "llara"])
def test_resume_equals_uninterrupted_run(
    stage: str, bi_encoder: Path, data_dir: Path, tmp_path: Path
) -> None:
    data = {
        "mntp": "texts.jsonl",
        "simcse": "texts.jsonl",
        "supervised": "supervised.jsonl",
        "llara": "pairs.jsonl",
    }[stage]
    extra: dict[str, object] = {"max_steps": 6, "save_steps": 3, "batch_size": 4, "lr": 1e-2}
    if stage == "mntp":
        extra["max_length"] = 24
    if stage in ("simcse", "supervised"):
        extra["dropout"] = 0.2  # dropout on: the RNG state must be restored too
    if stage == "llara":
        extra["num_placeholders"] = 2
    full = tmp_path / "full"
    run(stage, base_params(bi_encoder, full, data_dir / data, **extra))

    part = tmp_path / "part"

    def stop(step: int, metrics: dict[str, float]) -> None:
        if step == 4:  # after the step-3 checkpoint, before the next one
            raise Interrupted

    with pytest.raises(Interrupted):
        make_trainer(stage, base_params(bi_encoder, part, data_dir / data, **extra), stop).run()
    assert checkpoint_steps(part) == [3]
    with pytest.raises(TrainingError, match="--resume"):
        run(stage, base_params(bi_encoder, part, data_dir / data, **extra))
    run(stage, base_params(bi_encoder, part, data_dir / data, resume=True, **extra))

    a = load_file(str(full / "checkpoints" / "step-6" / "trainable.safetensors"))
    b = load_file(str(part / "checkpoints" / "step-6" / "trainable.safetensors"))
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    log_a = [json.loads(x)["loss"] for x in (full / "train_log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x)["loss"] for x in (part / "train_log.jsonl").read_text().splitlines()]
    assert len(log_b) == 6
    np.testing.assert_allclose(log_a, log_b, rtol=1e-5)
    np.testing.assert_allclose(
        Encoder.load(full).encode(SENTENCES), Encoder.load(part).encode(SENTENCES), atol=1e-6
    )


def test_resume_refuses_changed_settings(bi_encoder: Path, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    params = base_params(bi_encoder, out, data_dir / "texts.jsonl", batch_size=8)
    run("simcse", params)
    with pytest.raises(TrainingError, match="lr"):
        run("simcse", {**params, "resume": True, "lr": 1.0})
    with pytest.raises(TrainingError, match=r"already holds an encoder|--resume"):
        run("simcse", params)
    assert run("simcse", {**params, "overwrite": True}) == out.resolve()


def test_checkpoints_are_pruned_and_hold_the_training_state(
    bi_encoder: Path, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "o"
    run(
        "simcse",
        base_params(
            bi_encoder,
            out,
            data_dir / "texts.jsonl",
            batch_size=8,
            max_steps=5,
            save_steps=1,
            save_total_limit=2,
        ),
    )
    assert checkpoint_steps(out) == [4, 5]
    state = torch.load(out / "checkpoints" / "step-5" / "trainer_state.pt", weights_only=False)
    assert state["step"] == 5 and state["data_position"]["examples_seen"] == 40
    assert {"optimizer", "scheduler", "rng", "params"} <= state.keys()


def test_worker_registry_functions_and_param_errors(tmp_path: Path, bi_encoder: Path) -> None:
    assert set(TRAINERS) == {"mntp", "simcse", "supervised", "llara"}
    with pytest.raises(TrainingError, match="mask_prob"):
        TRAINERS["mntp"]({"from": str(bi_encoder), "out": str(tmp_path), "mask_prob": 2})
    with pytest.raises(TrainingError, match="nonsense"):
        TRAINERS["simcse"]({"from": str(bi_encoder), "out": str(tmp_path), "nonsense": 1})
    with pytest.raises(TrainingError, match="unknown training stage"):
        make_trainer("dpo", {})


def test_a_second_run_on_the_same_folder_is_refused(
    bi_encoder: Path, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "o"
    params = base_params(bi_encoder, out, data_dir / "texts.jsonl", batch_size=8, max_steps=2)
    seen: list[str] = []

    def second_run(step: int, metrics: dict[str, float]) -> None:
        if step == 1:
            with pytest.raises(TrainingError, match="in use by another training run"):
                run("simcse", {**params, "resume": True})
            seen.append("refused")

    make_trainer("simcse", params, second_run).run()
    assert seen == ["refused"]
    assert run("simcse", {**params, "resume": True}) == out.resolve()  # lock released


def test_device_resolution() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="CUDA is not available"):
            resolve_device("cuda")


def test_lora_targets_are_found_by_name(bi_encoder: Path, data_dir: Path, tmp_path: Path) -> None:
    params = base_params(bi_encoder, tmp_path / "o", data_dir / "texts.jsonl", batch_size=8)
    trainer = make_trainer("simcse", {**params, "target_modules": ["q_proj", "nothing"]})
    trainer.run()
    names = {n for n, _ in trainer.trainable()}
    assert names and all(".q_proj." in n for n in names)
    bad = make_trainer(
        "simcse", {**params, "out": str(tmp_path / "b"), "target_modules": ["c_attn"]}
    )
    with pytest.raises(Exception, match=r"linear layers are: .*q_proj"):
        bad.run()


def test_resume_may_shorten_the_run_and_retargets_the_decay(
    bi_encoder: Path, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "short"
    extra: dict[str, object] = {"save_steps": 2, "batch_size": 4, "warmup_ratio": 0.0}
    params = base_params(bi_encoder, out, data_dir / "supervised.jsonl", **extra)

    def stop(step: int, metrics: dict[str, float]) -> None:
        if step == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        make_trainer("supervised", {**params, "max_steps": 10}, stop).run()
    assert checkpoint_steps(out) == [2]
    with pytest.raises(TrainingError, match="past --max-steps"):
        run("supervised", {**params, "max_steps": 1, "resume": True})
    run("supervised", {**params, "max_steps": 5, "resume": True})
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]
    # The linear decay now ends at step 5: lr after step s is lr0 * (5 - s) / 5.
    lr0 = 1e-4
    np.testing.assert_allclose([r["lr"] for r in log[2:]], [lr0 * 2 / 5, lr0 / 5, 0.0], atol=1e-12)

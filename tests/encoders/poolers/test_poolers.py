"""Trainable poolers on a tiny random Llama: padding masked, exact save/load, gradients flow."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from encoders import Encoder, EncoderConfig
from encoders.poolers import (
    LatentAttentionPooler,
    MultiLayerPooler,
    Pooler,
    PoolerError,
    build_pooler,
    build_pooler_for,
    load_pooler,
    save_pooler,
)
from encoders.testing import tiny_model_folder
from tests.encoders.helpers import assert_batch_invariant

KINDS = ["latent_attention", "multi_layer"]
TEXTS = [
    "Vitamin D deficiency is associated with infection.",
    "a",
    "The quick brown fox jumps over the lazy dog and keeps running through the field all day.",
    "proteins, cells and genes",
    "Large language models turn text into vectors when attention is bidirectional. " * 3,
] * 2


def embed_for_training(
    encoder: Encoder,
    pooler: Pooler,
    texts: Sequence[str],
    instruction: str | None = None,
) -> torch.Tensor:
    """Pooled vectors [len(texts), H] with gradients through ``pooler`` only (the model runs
    without gradients), in input order, one padded batch; not normalised."""
    batch = encoder.collate(encoder.tokenize(texts, instruction, encoder.config.max_length))
    with torch.no_grad():
        output = encoder.hidden_states(batch, all_layers=pooler.needs_all_layers)
    return pooler(output, batch)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_folder(tmp_path_factory.mktemp("tiny") / "llama", "llama")


@pytest.fixture(scope="module")
def base(folder: Path) -> Encoder:
    return Encoder.from_config(EncoderConfig(base_model=str(folder), attention="bidirectional"))


def scrambled(pooler: Pooler, seed: int = 0) -> Pooler:
    """Random non-zero parameters, so the pooler is far from its mean-pooling start."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in pooler.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return pooler.eval()


def saved(base: Encoder, kind: str, path: Path, seed: int = 0) -> Path:
    return save_pooler(scrambled(build_pooler_for(base, kind), seed), path)


def encoder_with(folder: Path, pooler: Path, kind: str, **kwargs: object) -> Encoder:
    config = EncoderConfig(base_model=str(folder), pooling=kind, pooler=str(pooler), **kwargs)  # type: ignore[arg-type]
    return Encoder.from_config(config)


@pytest.mark.parametrize("kind", KINDS)
def test_padding_and_neighbours_do_not_change_the_vector(
    folder: Path, base: Encoder, kind: str, tmp_path: Path
) -> None:
    path = saved(base, kind, tmp_path / kind)
    for attention in ("causal", "bidirectional"):
        right = encoder_with(folder, path, kind, attention=attention, padding_side="right")
        left = encoder_with(folder, path, kind, attention=attention, padding_side="left")
        single = encoder_with(folder, path, kind, attention=attention, max_batch_size=1)
        assert_batch_invariant(single, [right, left], TEXTS, seed=1)


@pytest.mark.parametrize("kind", KINDS)
def test_padded_and_instruction_positions_are_ignored_and_get_no_gradient(
    base: Encoder, kind: str
) -> None:
    """Feed the pooler hidden states directly: garbage at padded / instruction positions must
    change neither the output nor receive gradient."""
    pooler = scrambled(build_pooler_for(base, kind))
    items = base.tokenize(["proteins, cells and genes", "a much longer text " * 4], "Query:", 64)
    batch = base.collate(items)
    with torch.no_grad():
        out = base.hidden_states(batch, all_layers=True)
    layers = [h.clone().requires_grad_(True) for h in out.hidden_states]  # type: ignore[attr-defined]
    clean = SimpleNamespace(last_hidden_state=layers[-1], hidden_states=tuple(layers))
    result = pooler(clean, batch)
    result.sum().backward()
    outside = ~batch["pool_mask"].bool()
    assert outside[0].any() and outside[1].any()  # padding in row 0, instruction in both
    used = [h for h in layers if h.grad is not None]
    assert used, "no gradient reached the hidden states"
    for h in used:
        assert h.grad is not None
        assert torch.all(h.grad[outside] == 0)
        assert h.grad[~outside].abs().sum() > 0
    noisy = [h.detach().clone() for h in layers]
    for h in noisy:
        h[outside] = torch.randn_like(h[outside]) * 100
    dirty = SimpleNamespace(last_hidden_state=noisy[-1], hidden_states=tuple(noisy))
    torch.testing.assert_close(pooler(dirty, batch), result.detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_reproduce_the_outputs_exactly(
    folder: Path, base: Encoder, kind: str, tmp_path: Path
) -> None:
    module = scrambled(build_pooler_for(base, kind), seed=4)
    path = save_pooler(module, tmp_path / "pooler")
    loaded = load_pooler(path)
    assert type(loaded) is type(module) and loaded.hparams == module.hparams
    for a, b in zip(module.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    enc = encoder_with(folder, path, kind, attention="bidirectional", normalize=False)
    got = enc.encode(TEXTS[:4])
    with torch.inference_mode():
        direct = embed_for_training(base, module, TEXTS[:4]).numpy()
    np.testing.assert_array_equal(got, direct)
    # and a saved encoder config that names the pooler reloads to the same vectors
    enc.save(tmp_path / "enc")
    np.testing.assert_array_equal(Encoder.load(tmp_path / "enc").encode(TEXTS[:4]), got)


def test_untrained_latent_attention_is_mean_pooling(folder: Path, base: Encoder) -> None:
    """The MLP's output layer starts at zero: a fresh pooler equals mean pooling."""
    pooler = build_pooler_for(base, "latent_attention")
    mean = Encoder.from_config(
        EncoderConfig(base_model=str(folder), attention="bidirectional", normalize=False)
    )
    with torch.inference_mode():
        pooled = embed_for_training(base, pooler, TEXTS).numpy()
    np.testing.assert_allclose(pooled, mean.encode(TEXTS), atol=1e-5)


def test_untrained_multi_layer_averages_every_layer(base: Encoder) -> None:
    pooler = build_pooler_for(base, "multi_layer")
    items = base.tokenize(TEXTS[:3], None, 64)
    batch = base.collate(items)
    with torch.inference_mode():
        out = base.hidden_states(batch, all_layers=True)
        got = pooler(out, batch)
    mask = batch["pool_mask"].float()
    expected = torch.stack(
        [
            (F.layer_norm(h, h.shape[-1:]) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            for h in out.hidden_states  # type: ignore[attr-defined]
        ]
    ).mean(0)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_contrastive_training_moves_every_parameter_and_lowers_the_loss(
    base: Encoder, kind: str
) -> None:
    """A few InfoNCE steps (in-batch negatives) on a frozen tiny model: the loss goes down and
    every pooler parameter receives gradient and changes."""
    torch.manual_seed(0)
    pooler = build_pooler_for(base, kind).train()
    queries = ["vitamin d", "quick fox", "proteins", "search engines", "language models", "zero"]
    docs = [
        "Vitamin D deficiency is associated with infection.",
        "The quick brown fox jumps over the lazy dog.",
        "proteins, cells and genes",
        "Search engines rank documents by cosine similarity.",
        "Large language models turn text into vectors.",
        "0 1 2 3 4 5 6 7 8 9",
    ]
    before = {n: p.detach().clone() for n, p in pooler.named_parameters()}
    optimizer = torch.optim.Adam(pooler.parameters(), lr=5e-2)
    losses = []
    touched: set[str] = set()
    for _ in range(12):
        q = F.normalize(embed_for_training(base, pooler, queries, "Retrieve:"), dim=-1)
        d = F.normalize(embed_for_training(base, pooler, docs), dim=-1)
        loss = F.cross_entropy(q @ d.T / 0.05, torch.arange(len(queries)))
        optimizer.zero_grad()
        loss.backward()
        touched |= {n for n, p in pooler.named_parameters() if p.grad is not None and p.grad.any()}
        optimizer.step()
        losses.append(loss.item())
    assert touched == set(before)
    assert all(not torch.equal(p, before[n]) for n, p in pooler.named_parameters())
    assert losses[-1] < losses[0] * 0.8


def test_parameter_counts_are_small_for_smollm2_sizes() -> None:
    hidden, layers = 576, 30  # SmolLM2-135M
    latent = build_pooler("latent_attention", hidden, layers)
    multi = build_pooler("multi_layer", hidden, layers)
    assert isinstance(latent, LatentAttentionPooler) and isinstance(multi, MultiLayerPooler)
    assert latent.num_parameters() == 64 * hidden + (hidden * 256 + 256) + (256 * hidden + hidden)
    assert multi.num_parameters() == 4 * hidden + (layers + 1) * 8 + hidden * hidden + hidden
    assert max(latent.num_parameters(), multi.num_parameters()) < 0.003 * 134_515_008


def test_bad_poolers_are_clear_errors(base: Encoder, tmp_path: Path) -> None:
    with pytest.raises(PoolerError, match="unknown pooler kind"):
        build_pooler("attention", 32, 2)
    with pytest.raises(PoolerError, match="divisible"):
        build_pooler("latent_attention", 30, 2, num_heads=8)
    with pytest.raises(PoolerError, match="not a pooler folder"):
        load_pooler(tmp_path)
    with pytest.raises(PoolerError, match="build_pooler"):
        save_pooler(torch.nn.Linear(2, 2), tmp_path / "x")
    wrong_depth = build_pooler("multi_layer", 32, 5)
    batch = base.collate(base.tokenize(["a b"], None, 16))
    with torch.inference_mode():
        out = base.hidden_states(batch, all_layers=True)
        with pytest.raises(PoolerError, match="5 layers"):
            wrong_depth(out, batch)
        with pytest.raises(PoolerError, match="hidden size 64"):
            build_pooler("latent_attention", 64, 2)(out, batch)

"""Trainable poolers: small modules that turn the model output into one vector per text.

Both read only the text tokens (``pool_mask``: no instruction, no padding) and start, before any
training, as a fixed training-free pooling, so training can only move away from a sane baseline:

* ``latent_attention`` (the idea of NV-Embed's latent-attention layer): every last-layer token
  state attends, as a query, to a trainable latent array that serves as both keys and values
  (multi-head, no projections); an MLP maps the result back and is added to the token state;
  the text tokens are then mean-pooled. The MLP's output layer starts at zero, so an untrained
  pooler is exactly mean pooling.
* ``multi_layer``: a few trainable queries cross-attend over the text tokens of *every* layer's
  hidden states (embeddings included), each layer normalised to a common scale, with a trainable
  per-layer, per-head attention bias; the query outputs are averaged and passed through a
  residual linear map that starts at zero. Untrained (queries zero), it is the mean of the
  normalised text-token states over all layers.

A pooler is saved as a folder (``pooler_config.json`` + ``pooler.safetensors``) beside the
adapters and named by :attr:`encoders.config.EncoderConfig.pooler`. The training code builds one
with :func:`build_pooler` (the frozen model's hidden states, gradients through the pooler only)
and saves it with :func:`save_pooler`; :func:`load_pooler` restores it exactly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from encoders.errors import EmberError
from encoders.pooling import masked_mean

if TYPE_CHECKING:
    from encoders.encoder import Encoder

POOLER_CONFIG = "pooler_config.json"
POOLER_WEIGHTS = "pooler.safetensors"


class PoolerError(EmberError, ValueError):
    """A pooler folder is missing, malformed or does not fit the model."""


class Pooler(nn.Module):
    """Base class: remembers how it was built so :func:`save_pooler` can rebuild it."""

    kind: str = ""
    needs_all_layers: bool = False

    def __init__(self, hidden_size: int, num_layers: int, hparams: dict[str, Any]) -> None:
        super().__init__()
        if hidden_size < 1 or num_layers < 1:
            raise PoolerError(f"bad sizes: hidden_size={hidden_size}, num_layers={num_layers}")
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.hparams = dict(hparams)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def pool_states(self, output: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, output: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``output``: HF model output; ``batch``: collated batch with ``pool_mask``. [B, H]."""
        return self.pool_states(output, batch)

    def _check_width(self, states: torch.Tensor) -> None:
        if states.shape[-1] != self.hidden_size:
            raise PoolerError(
                f"{self.kind} pooler built for hidden size {self.hidden_size}, "
                f"the model gives {states.shape[-1]}"
            )


class LatentAttentionPooler(Pooler):
    kind = "latent_attention"
    needs_all_layers = False

    def __init__(
        self,
        hidden_size: int,
        num_layers: int,
        *,
        num_latents: int = 64,
        num_heads: int = 8,
        mlp_hidden: int = 256,
    ) -> None:
        super().__init__(
            hidden_size,
            num_layers,
            {"num_latents": num_latents, "num_heads": num_heads, "mlp_hidden": mlp_hidden},
        )
        if hidden_size % num_heads:
            raise PoolerError(f"hidden_size {hidden_size} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.latents = nn.Parameter(torch.randn(num_latents, hidden_size) / math.sqrt(hidden_size))
        self.up = nn.Linear(hidden_size, mlp_hidden)
        self.down = nn.Linear(mlp_hidden, hidden_size)
        nn.init.zeros_(self.down.weight)
        nn.init.zeros_(self.down.bias)

    def pool_states(self, output: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = output.last_hidden_state.float()
        self._check_width(hidden)
        b, t, h = hidden.shape
        heads, dh = self.num_heads, h // self.num_heads
        queries = F.layer_norm(hidden, (h,)).reshape(b, t, heads, dh)
        latents = self.latents.reshape(-1, heads, dh)
        scores = torch.einsum("btnd,rnd->bntr", queries, latents) / math.sqrt(dh)
        mixed = torch.einsum("bntr,rnd->btnd", scores.softmax(dim=-1), latents).reshape(b, t, h)
        states = hidden + self.down(F.gelu(self.up(mixed)))
        return masked_mean(states, batch["pool_mask"])


class MultiLayerPooler(Pooler):
    kind = "multi_layer"
    needs_all_layers = True

    def __init__(
        self, hidden_size: int, num_layers: int, *, num_queries: int = 4, num_heads: int = 8
    ) -> None:
        super().__init__(
            hidden_size, num_layers, {"num_queries": num_queries, "num_heads": num_heads}
        )
        if hidden_size % num_heads:
            raise PoolerError(f"hidden_size {hidden_size} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.queries = nn.Parameter(torch.zeros(num_queries, hidden_size))
        self.layer_bias = nn.Parameter(torch.zeros(num_layers + 1, num_heads))
        self.out = nn.Linear(hidden_size, hidden_size)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def pool_states(self, output: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        layers = getattr(output, "hidden_states", None)
        if layers is None:
            raise PoolerError("multi_layer pooling needs the model run with all hidden states")
        if len(layers) != self.num_layers + 1:
            raise PoolerError(
                f"multi_layer pooler built for {self.num_layers} layers (+ embeddings), "
                f"the model gives {len(layers)} hidden states"
            )
        states = torch.stack([F.layer_norm(x.float(), (x.shape[-1],)) for x in layers], dim=1)
        self._check_width(states)
        b, n_layers, t, h = states.shape
        heads, dh = self.num_heads, h // self.num_heads
        keys = states.reshape(b, n_layers, t, heads, dh)
        queries = self.queries.reshape(-1, heads, dh)
        scores = torch.einsum("qnd,bltnd->bnqlt", queries, keys) / math.sqrt(dh)
        scores = scores + self.layer_bias.t()[None, :, None, :, None]
        valid = batch["pool_mask"].bool()  # [B, T]
        scores = scores.masked_fill(~valid[:, None, None, None, :], torch.finfo(scores.dtype).min)
        weights = scores.reshape(b, heads, -1, n_layers * t).softmax(dim=-1)
        weights = weights.reshape(b, heads, -1, n_layers, t)
        per_query = torch.einsum("bnqlt,bltnd->bqnd", weights, keys).reshape(b, -1, h)
        pooled = per_query.mean(dim=1)
        pooled = pooled + self.out(pooled)
        return pooled * valid.any(dim=1, keepdim=True).to(pooled.dtype)  # no text: zeros


POOLER_KINDS: dict[str, type[Pooler]] = {
    LatentAttentionPooler.kind: LatentAttentionPooler,
    MultiLayerPooler.kind: MultiLayerPooler,
}


def build_pooler(kind: str, hidden_size: int, num_layers: int, **hparams: Any) -> Pooler:
    """A fresh pooler of ``kind`` for a model of ``hidden_size`` and ``num_layers`` layers."""
    if kind not in POOLER_KINDS:
        raise PoolerError(f"unknown pooler kind {kind!r}; choose from {sorted(POOLER_KINDS)}")
    return POOLER_KINDS[kind](hidden_size, num_layers, **hparams)


def build_pooler_for(encoder: Encoder, kind: str, **hparams: Any) -> Pooler:
    """A fresh pooler sized for ``encoder``'s model."""
    config: Any = encoder.model.config
    pooler = build_pooler(kind, int(config.hidden_size), int(config.num_hidden_layers), **hparams)
    return pooler.to(next(encoder.model.parameters()).device)


def save_pooler(module: nn.Module, folder: str | Path) -> Path:
    """Write ``pooler_config.json`` and ``pooler.safetensors`` to ``folder``."""
    if not isinstance(module, Pooler):
        raise PoolerError(f"save_pooler takes a pooler from build_pooler, not {type(module)}")
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    meta = {
        "kind": module.kind,
        "hidden_size": module.hidden_size,
        "num_layers": module.num_layers,
        "hparams": module.hparams,
        "parameters": module.num_parameters(),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(tensors, str(path / POOLER_WEIGHTS))
    (path / POOLER_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    return path


def load_pooler(folder: str | Path) -> Pooler:
    """Rebuild a saved pooler (eval mode, CPU); its outputs equal the saved module's."""
    path = Path(folder)
    if not (path / POOLER_CONFIG).is_file() or not (path / POOLER_WEIGHTS).is_file():
        raise PoolerError(f"{path}: not a pooler folder (needs {POOLER_CONFIG}, {POOLER_WEIGHTS})")
    meta = json.loads((path / POOLER_CONFIG).read_text())
    module = build_pooler(
        meta["kind"], int(meta["hidden_size"]), int(meta["num_layers"]), **meta["hparams"]
    )
    module.load_state_dict(load_file(str(path / POOLER_WEIGHTS)), strict=True)
    return module.eval()

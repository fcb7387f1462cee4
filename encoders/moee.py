"""MoEE: embeddings from a Mixture-of-Experts LLM's routing weights and hidden states.

Following the idea of Fan et al. ("Your Mixture-of-Experts LLM Is Secretly an Embedding Model
For Free"): the router of every MoE layer turns each token into a distribution over experts.
Averaged over the text tokens and concatenated over the layers, these distributions form the
routing-weight vector ``rw`` (``layers * experts`` dimensions; before standardisation each
layer's block sums to 1). The pooled last hidden state is ``hs``. The two are complementary and
are combined at scoring time:

* ``sum``: cos(hs_q, hs_d) + w * cos(rw_q, rw_d), served from two Qdrant named vectors
  (``hs`` and ``rw``) and fused exactly by :mod:`indexer.fusion`;
* ``concat``: one vector ``[hs, sqrt(w) * rw] / sqrt(1 + w)`` of unit-norm parts, whose cosine
  is exactly ``(cos hs + w * cos rw) / (1 + w)``: the same ranking from a single vector.

``encode()`` always returns that single combined vector, so code that only knows cosine over
one vector (the evaluation harness, ``/v1/embeddings``) ranks exactly like ``sum``.

Standardisation: each raw dimension is centred and scaled with a per-dimension mean and standard
deviation fitted ONCE on a corpus sample by :meth:`MoeeEncoder.fit_stats` and stored in the
encoder config (:class:`encoders.config.MoeeStats`). Without it, routing weights are all
positive and close to ``1 / experts``, so every pair of texts has a cosine near 1. Statistics
are never computed per batch: a text's vector does not depend on its batch.

Router logits come from the model output (``config.output_router_logits = True``, honoured by the
Mixtral, OLMoE and Qwen2-MoE base models in transformers 5) or, for models that do not return
them, from forward hooks on the router modules, found generically (a module whose class name
ends in ``Router`` or whose attribute name is ``gate``, with a ``[experts, hidden]`` weight).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Unpack

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from encoders.config import EncoderConfig, MoeeConfig, MoeeStats
from encoders.encoder import Encoder, Tokenized
from encoders.errors import EmberError
from encoders.pooling import pool
from encoders.types import EncodeOptions
from encoders.vectors import l2_normalize, moments, standardize


class MoeeError(EmberError, RuntimeError):
    """The model is not a Mixture-of-Experts model, or the encoder is not ready (no stats)."""


def hf_config(model: nn.Module) -> Any:
    """The HF config of a model (typed loosely: its fields differ per family)."""
    return model.config


def num_experts(model_config: Any) -> int:
    """Routed experts per MoE layer, read from the HF config (names differ per family)."""
    for name in ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts"):
        value = getattr(model_config, name, None)
        if isinstance(value, int) and value > 1:
            return value
    raise MoeeError(
        f"{getattr(model_config, 'model_type', '?')}: not a Mixture-of-Experts model "
        "(no num_local_experts / num_experts in its config)"
    )


def find_routers(model: nn.Module, experts: int) -> list[nn.Module]:
    """Router modules in forward order: class name ``*Router`` or attribute name ``gate``, with a
    2-D weight of ``experts`` rows (this leaves out e.g. Qwen2-MoE's 1-row shared-expert gate)."""
    found = []
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        weight = getattr(module, "weight", None)
        if not (type(module).__name__.endswith("Router") or leaf == "gate"):
            continue
        if isinstance(weight, torch.Tensor) and weight.ndim == 2 and weight.shape[0] == experts:
            found.append(module)
    return found


@contextmanager
def capture_router_logits(routers: Sequence[nn.Module]) -> Iterator[list[torch.Tensor]]:
    """Collect each router's logits (its output, or the first element of a tuple output)."""
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _args: Any, output: Any) -> None:
        logits = output[0] if isinstance(output, tuple | list) else output
        captured.append(logits)

    handles = [r.register_forward_hook(hook) for r in routers]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def pool_routing_weights(
    router_logits: Sequence[torch.Tensor],
    attention_mask: torch.Tensor,
    pool_mask: torch.Tensor,
    mode: str = "mean",
) -> torch.Tensor:
    """Softmax each layer's logits over the experts per token, pool over the text tokens
    (padding masked) and concatenate the layers: [B, layers * experts], float32."""
    batch, length = attention_mask.shape
    pooled = []
    for logits in router_logits:
        probs = torch.softmax(logits.float().reshape(batch, length, -1), dim=-1)
        pooled.append(pool(probs, attention_mask, pool_mask, mode))
    return torch.cat(pooled, dim=-1)


def combine(hs: np.ndarray, rw: np.ndarray, rw_weight: float) -> np.ndarray:
    """``[hs, sqrt(w) * rw] / sqrt(1 + w)`` of unit rows: a unit vector whose dot product with
    another is ``(cos hs + w * cos rw) / (1 + w)``."""
    scale = math.sqrt(1.0 + rw_weight)
    return np.concatenate([hs, math.sqrt(rw_weight) * rw], axis=1).astype(np.float32) / scale


def sum_similarity(
    query: dict[str, np.ndarray], docs: dict[str, np.ndarray], rw_weight: float
) -> np.ndarray:
    """Brute-force MoEE ``sum`` scores [queries, docs] from unit ``hs`` / ``rw`` rows."""
    return query["hs"] @ docs["hs"].T + rw_weight * (query["rw"] @ docs["rw"].T)


class MoeeEncoder(Encoder):
    """An :class:`Encoder` for MoE models; see the module docstring for the method."""

    def __init__(
        self, config: EncoderConfig, model: nn.Module, tokenizer: PreTrainedTokenizerBase
    ) -> None:
        if config.moee is None:
            config = config.model_copy(update={"moee": MoeeConfig()})
        super().__init__(config, model, tokenizer)
        self._hf_config = hf_config(model)
        self.experts = num_experts(self._hf_config)
        self._routers = find_routers(model, self.experts)
        self._use_output = self.settings.router_source != "hook"
        # The MoE base models read ``output_router_logits`` from their config by default.
        self._hf_config.output_router_logits = self._use_output
        self._rw_dim: int | None = None

    @property
    def settings(self) -> MoeeConfig:
        assert self.config.moee is not None  # set in __init__
        return self.config.moee

    # ---- dimensions -----------------------------------------------------------------------
    @property
    def hs_dim(self) -> int:
        return int(getattr(self.model.config, "hidden_size", 0))

    @property
    def rw_dim(self) -> int:
        """``moe layers * experts``, found with a one-token probe (layers may be dense)."""
        if self._rw_dim is None:
            stats = self.settings.stats
            if stats is not None:
                self._rw_dim = len(stats.rw_mean)
            else:
                _, rw = self.encode_raw(["probe"], max_length=8)
                self._rw_dim = int(rw.shape[1])
        return self._rw_dim

    @property
    def dim(self) -> int:
        """Dimension of :meth:`encode`'s combined vector."""
        return self.hs_dim + self.rw_dim

    @property
    def vector_dims(self) -> dict[str, int]:
        if self.settings.similarity == "concat":
            return {"dense": self.dim}
        return {"hs": self.hs_dim, "rw": self.rw_dim}

    # ---- raw vectors ----------------------------------------------------------------------
    def router_logits(self, batch: dict[str, torch.Tensor], all_layers: bool) -> tuple[Any, list]:
        """The model output and the per-layer router logits for a collated batch."""
        if self._use_output:
            out = self.hidden_states(batch, all_layers=all_layers)
            logits = getattr(out, "router_logits", None)
            if logits:
                return out, list(logits)
            if self.settings.router_source == "output":
                raise MoeeError(f"{type(self.model).__name__} returned no router_logits")
            self._use_output = False  # this model does not return them: hook from now on
            self._hf_config.output_router_logits = False
        if not self._routers:
            raise MoeeError(f"no router modules with {self.experts} experts found in the model")
        with capture_router_logits(self._routers) as captured:
            out = self.hidden_states(batch, all_layers=all_layers)
        return out, list(captured)

    def raw_batch(self, items: Sequence[Tokenized]) -> tuple[torch.Tensor, torch.Tensor]:
        """Unstandardised ``hs`` [B, hidden] and ``rw`` [B, layers * experts] (float32)."""
        batch = self.collate(items)
        all_layers = self.pooler is not None and self.pooler.needs_all_layers
        out, logits = self.router_logits(batch, all_layers)
        hs = self.pool_output(out, batch)
        rw = pool_routing_weights(
            logits, batch["attention_mask"], batch["pool_mask"], self.settings.rw_pooling
        )
        return hs.float(), rw

    def encode_raw(
        self, texts: Sequence[str], instruction: str | None = None, **options: Unpack[EncodeOptions]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw (unstandardised, unnormalised) ``hs`` and ``rw`` for ``texts``, in input order."""
        widths = (self.hs_dim, self._rw_dim or 0)
        hs, rw = self.run_batches(texts, instruction, self.raw_batch, widths, **options)
        return hs, rw

    # ---- statistics -----------------------------------------------------------------------
    def fit_stats(
        self,
        texts: Sequence[str],
        *,
        max_length: int | None = None,
        show_progress: bool = False,
    ) -> MoeeStats:
        """Fit the per-dimension standardisation on a corpus sample (documents, no instruction)
        and store it in this encoder's config. Call once; save the encoder to keep it."""
        if len(texts) < 2:
            raise ValueError("fit_stats needs at least 2 texts to estimate a spread")
        hs, rw = self.encode_raw(texts, max_length=max_length, show_progress=show_progress)
        hs_mean, hs_std = moments(hs)
        rw_mean, rw_std = moments(rw)
        stats = MoeeStats(
            hs_mean=hs_mean, hs_std=hs_std, rw_mean=rw_mean, rw_std=rw_std, samples=len(texts)
        )
        settings = self.settings.model_copy(update={"stats": stats})
        self.config = self.config.model_copy(update={"moee": settings})
        self._rw_dim = len(rw_mean)
        return stats

    def transform(self, hs: np.ndarray, rw: np.ndarray) -> dict[str, np.ndarray]:
        """Raw vectors -> unit ``hs`` and ``rw`` (standardised first when configured)."""
        settings = self.settings
        if settings.standardize:
            stats = settings.stats
            if stats is None:
                raise MoeeError(
                    "MoEE statistics are not fitted: run fit_stats on a corpus sample "
                    "(`ember moee fit-stats`) or set moee.standardize=false"
                )
            if len(stats.hs_mean) != hs.shape[1] or len(stats.rw_mean) != rw.shape[1]:
                raise MoeeError(
                    f"MoEE statistics are for hs/rw of {len(stats.hs_mean)}/{len(stats.rw_mean)} "
                    f"dimensions, the model gives {hs.shape[1]}/{rw.shape[1]}: refit them"
                )
            hs = standardize(hs, stats.hs_mean, stats.hs_std)
            rw = standardize(rw, stats.rw_mean, stats.rw_std)
        return {"hs": l2_normalize(hs), "rw": l2_normalize(rw)}

    # ---- public API -----------------------------------------------------------------------
    def encode_parts(
        self, texts: Sequence[str], instruction: str | None = None, **options: Unpack[EncodeOptions]
    ) -> dict[str, np.ndarray]:
        """Unit ``hs`` and ``rw`` vectors whatever the similarity mode."""
        return self.transform(*self.encode_raw(texts, instruction, **options))

    def encode_pooled(
        self, texts: Sequence[str], instruction: str | None = None, **options: Unpack[EncodeOptions]
    ) -> np.ndarray:
        """What :meth:`encode` returns: the combined unit vector (cosine = (cos hs + w cos rw) /
        (1 + w)) for either mode."""
        parts = self.encode_parts(texts, instruction, **options)
        return combine(parts["hs"], parts["rw"], self.settings.rw_weight)

    def finish(self, pooled: np.ndarray, normalize: bool | None = None) -> np.ndarray:
        """Combined vectors are unit already: :meth:`encode` returns them as they are
        (``normalize`` is accepted for the interface and has no effect)."""
        return pooled

    def encode_named(
        self, texts: Sequence[str], instruction: str | None = None, **options: Unpack[EncodeOptions]
    ) -> dict[str, np.ndarray]:
        """``{"hs", "rw"}`` for ``sum``, ``{"dense"}`` (the combined vector) for ``concat``."""
        parts = self.encode_parts(texts, instruction, **options)
        if self.settings.similarity == "concat":
            return {"dense": combine(parts["hs"], parts["rw"], self.settings.rw_weight)}
        return parts

    @property
    def vector_weights(self) -> dict[str, float]:
        """How the named vectors' cosines add up to the score (used by fused search)."""
        if self.settings.similarity == "concat":
            return {"dense": 1.0}
        return {"hs": 1.0, "rw": self.settings.rw_weight}

    def split_combined(self, vectors: np.ndarray) -> dict[str, np.ndarray]:
        """Invert :func:`combine`: unit ``hs`` and ``rw`` rows from combined vectors (what
        :meth:`encode` returns), for vectors stored combined (bench/moee_sweep.py reads the
        eval cache this way); serving never needs it, queries travel as named vectors."""
        arr = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        w = self.settings.rw_weight
        hs, rw = arr[:, : self.hs_dim], arr[:, self.hs_dim :]
        if rw.shape[1] != self.rw_dim:
            raise ValueError(f"expected combined vectors of {self.dim} dimensions, got {arr.shape}")
        return {"hs": l2_normalize(hs), "rw": l2_normalize(rw) if w > 0 else np.zeros_like(rw)}

    def embed_batch(self, items: Sequence[Tokenized]) -> torch.Tensor:
        """The combined vector for one batch (the same as :meth:`encode` per text)."""
        hs, rw = self.raw_batch(items)
        parts = self.transform(hs.cpu().numpy(), rw.cpu().numpy())
        return torch.from_numpy(combine(parts["hs"], parts["rw"], self.settings.rw_weight))

"""LLaRA (Llama2Vec) prompt embeddings.

The model reads the passage followed by two prompts, each ending in K placeholder tokens:

    <passage> The original sentence: <ebae_1>..<ebae_K> The next sentence: <ebar_1>..<ebar_K>
              |------------- EBAE branch -------------|------------- EBAR branch ------------|

The two prompts are branches of the same passage: the EBAR branch cannot attend to the EBAE
branch (a custom 4D mask) and its position ids restart where the EBAE branch started, so each
branch reads exactly as if it alone followed the passage. One forward gives both embeddings.
The embedding is the mean of the final hidden states at the placeholder positions (both branches
by default; per role configurable: queries may use EBAR, "predict what follows", and documents
EBAE, "say what this is", as LLaRA's fine-tuned models do).

The placeholder tokens are added to the tokenizer as special tokens by ``ember train llara``,
which writes a base-model copy (resized embeddings, tokenizer with the tokens, ``llara.json``)
into its output folder; their ids are always looked up from the tokenizer.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from transformers import PreTrainedTokenizerBase

from encoders.config import EncoderConfig
from encoders.encoder import Encoder, Tokenized
from encoders.errors import EmberError
from encoders.loading import resolve_model_path
from encoders.pooling import masked_mean

LLARA_FILE = "llara.json"
PoolPart = Literal["both", "ebae", "ebar"]

# Segment ids in a collated LLaRA batch.
PAD, PASSAGE, EBAE, EBAR = -1, 0, 1, 2


class LlaraError(EmberError, RuntimeError):
    pass


class LlaraSettings(BaseModel):
    """Prompts and placeholders; saved as ``llara.json`` beside the (resized) base model."""

    model_config = ConfigDict(extra="forbid")

    num_placeholders: int = Field(default=8, ge=1, le=64)
    ebae_prompt: str = " The original sentence:"
    ebar_prompt: str = " The next sentence:"
    ebae_token: str = Field(default="<|llara_ebae_{i}|>", description="format with i = 1..K")
    ebar_token: str = Field(default="<|llara_ebar_{i}|>", description="format with i = 1..K")
    query_pool: PoolPart = "both"
    document_pool: PoolPart = "both"

    @model_validator(mode="after")
    def _tokens(self) -> LlaraSettings:
        for name in ("ebae_token", "ebar_token"):
            if "{i}" not in getattr(self, name):
                raise ValueError(f"{name} must contain '{{i}}' (the placeholder number)")
        if set(self.ebae_tokens()) & set(self.ebar_tokens()):
            raise ValueError("EBAE and EBAR placeholder tokens must differ")
        return self

    def ebae_tokens(self) -> list[str]:
        return [self.ebae_token.format(i=i + 1) for i in range(self.num_placeholders)]

    def ebar_tokens(self) -> list[str]:
        return [self.ebar_token.format(i=i + 1) for i in range(self.num_placeholders)]

    def all_tokens(self) -> list[str]:
        return self.ebae_tokens() + self.ebar_tokens()

    def save(self, folder: str | Path) -> Path:
        out = Path(folder) / LLARA_FILE
        out.write_text(self.model_dump_json(indent=2) + "\n")
        return out

    @classmethod
    def load(cls, folder: str | Path) -> LlaraSettings:
        file = Path(folder) / LLARA_FILE
        return cls.model_validate_json(file.read_text()) if file.is_file() else cls()


def add_placeholder_tokens(tokenizer: PreTrainedTokenizerBase, settings: LlaraSettings) -> int:
    """Add the placeholders as special tokens (never split, never merged); returns how many
    were new. Existing special tokens are kept."""
    return int(tokenizer.add_tokens(settings.all_tokens(), special_tokens=True))


def token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int:
    """The id of a single token of the vocabulary; an error if the tokenizer does not have it."""
    found = tokenizer.convert_tokens_to_ids(token)
    unk = tokenizer.unk_token_id
    if not isinstance(found, int) or (found == unk and token != tokenizer.unk_token):
        raise LlaraError(f"token {token!r} is not in the tokenizer vocabulary")
    return found


class LlaraLayout:
    """Token ids of the two prompt branches, looked up from the tokenizer."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, settings: LlaraSettings) -> None:
        missing = [t for t in settings.all_tokens() if t not in tokenizer.get_vocab()]
        if missing:
            raise LlaraError(
                f"the tokenizer lacks the LLaRA placeholder tokens ({missing[0]!r}, ...): "
                "build the encoder with `ember train llara`"
            )
        self.settings = settings
        self.ebae_placeholders = [token_id(tokenizer, t) for t in settings.ebae_tokens()]
        self.ebar_placeholders = [token_id(tokenizer, t) for t in settings.ebar_tokens()]

        def prompt(text: str) -> list[int]:
            return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

        self.ebae_ids = prompt(settings.ebae_prompt) + self.ebae_placeholders
        self.ebar_ids = prompt(settings.ebar_prompt) + self.ebar_placeholders
        self.suffix_ids = self.ebae_ids + self.ebar_ids
        self.k = settings.num_placeholders

    @property
    def prompt_length(self) -> int:
        return len(self.suffix_ids)


def llara_layout_tensors(
    attention_mask: torch.Tensor, ebae_len: int, ebar_len: int, k: int
) -> dict[str, torch.Tensor]:
    """Segment ids, shared-branch position ids and placeholder masks for a padded batch whose
    rows end (before right padding / after left padding) with the EBAE then EBAR tokens."""
    real = attention_mask.bool()
    index = attention_mask.cumsum(dim=1) - 1  # index among the real tokens of the row
    length = attention_mask.sum(dim=1, keepdim=True)
    ebar_start = length - ebar_len
    ebae_start = ebar_start - ebae_len
    segment = torch.full_like(index, PASSAGE)
    segment = torch.where(index >= ebae_start, torch.full_like(index, EBAE), segment)
    segment = torch.where(index >= ebar_start, torch.full_like(index, EBAR), segment)
    segment = torch.where(real, segment, torch.full_like(index, PAD))
    # The EBAR branch restarts at the EBAE branch's first position.
    positions = torch.where(segment == EBAR, index - ebae_len, index).clamp(min=0)
    ebae_mask = (segment == EBAE) & (index >= ebar_start - k)
    ebar_mask = (segment == EBAR) & (index >= length - k)
    return {
        "segment_ids": segment,
        "position_ids": positions,
        "ebae_mask": ebae_mask.long(),
        "ebar_mask": ebar_mask.long(),
    }


def branch_mask_4d(segment_ids: torch.Tensor, causal: bool, dtype: torch.dtype) -> torch.Tensor:
    """[B, L] segment ids -> [B, 1, L, L] additive mask.

    A token sees passage tokens and tokens of its own branch (never the other branch), and with
    ``causal`` only keys at or before it in the sequence. Padded query rows see every real key,
    so no softmax row is empty.
    """
    real = segment_ids != PAD
    q = segment_ids[:, :, None]
    k = segment_ids[:, None, :]
    allowed = real[:, None, :] & ((k == PASSAGE) | (k == q))
    if causal:
        length = segment_ids.shape[1]
        order = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()
        allowed = allowed & order[None]
    allowed = torch.where(real[:, :, None], allowed, real[:, None, :].expand_as(allowed))
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


class LlaraEncoder(Encoder):
    """Encoder whose vectors are the pooled LLaRA placeholder states (``kind = "llara"``)."""

    def __init__(
        self, config: EncoderConfig, model: nn.Module, tokenizer: PreTrainedTokenizerBase
    ) -> None:
        if config.echo:
            raise LlaraError("LLaRA encoders do not support echo embeddings")
        super().__init__(config, model, tokenizer)
        self.settings = LlaraSettings.load(resolve_model_path(config.base_model))
        self.layout = LlaraLayout(tokenizer, self.settings)
        self._role = threading.local()

    # ---- roles: queries and documents may pool different branches ------------------------
    def _pool_part(self) -> PoolPart:
        if getattr(self._role, "query", False):
            return self.settings.query_pool
        return self.settings.document_pool

    @contextmanager
    def query_role(self, query: bool) -> Iterator[None]:
        """Every encode path runs its batches in here with its role (``query``), which
        :meth:`collate` reads to pool ``query_pool`` or ``document_pool`` (thread-local: another
        thread's forwards may interleave). Before the role was set by ``encode_queries`` alone,
        so queries encoded through ``encode(query=True)`` (the eval cache) or
        ``encode_queries_named`` (fused search) pooled the document branch."""
        previous = getattr(self._role, "query", False)
        self._role.query = query
        try:
            yield
        finally:
            self._role.query = previous

    # ---- tokenisation, collation, forward -------------------------------------------------
    def appended_ids(self, max_length: int) -> list[int]:
        """The EBAE and EBAR prompts, after the passage."""
        if max_length - self.layout.prompt_length < 1:
            raise LlaraError(
                f"max_length {max_length} leaves no room for the passage after the "
                f"{self.layout.prompt_length} LLaRA prompt tokens"
            )
        return self.layout.suffix_ids

    def collate(self, items: Sequence[Tokenized]) -> dict[str, torch.Tensor]:
        batch = super().collate(items)
        layout = llara_layout_tensors(
            batch["attention_mask"],
            len(self.layout.ebae_ids),
            len(self.layout.ebar_ids),
            self.layout.k,
        )
        batch.update(layout)
        part = self._pool_part()
        if part == "ebae":
            batch["pool_mask"] = layout["ebae_mask"]
        elif part == "ebar":
            batch["pool_mask"] = layout["ebar_mask"]
        else:
            batch["pool_mask"] = layout["ebae_mask"] | layout["ebar_mask"]
        return batch

    def model_mask(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The branch mask: EBAR never attends to EBAE (causal or not, as configured)."""
        dtype = next(self.model.parameters()).dtype
        causal = self.config.attention == "causal"
        return branch_mask_4d(batch["segment_ids"], causal, dtype)

    def pool_hidden(self, hidden: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The mean of the placeholder states the role pools (the pool mask of :meth:`collate`)."""
        return masked_mean(hidden, batch["pool_mask"])

    def placeholder_embeddings(
        self, items: Sequence[Tokenized]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean EBAE and mean EBAR placeholder states [B, H] each (for pre-training)."""
        batch = self.collate(items)
        hidden = self.hidden_states(batch).last_hidden_state  # type: ignore[attr-defined]
        return masked_mean(hidden, batch["ebae_mask"]), masked_mean(hidden, batch["ebar_mask"])

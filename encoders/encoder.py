"""The Encoder: text -> L2-normalised float32 vectors.

Tokenise once (with character offsets), sort by length, cut batches by a padded-token budget,
run the model, pool, restore the input order. Position ids are computed from the attention mask,
so a text's vector does not depend on its batch, its neighbours or the padding side.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Unpack

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from encoders.adapters import apply_adapters
from encoders.attention import padding_mask_4d, set_bidirectional
from encoders.config import EncoderConfig
from encoders.forward_lock import BACKGROUND_BUDGET_DIVISOR, ForwardLock, is_background
from encoders.hardware import configure_threads, cpu_capability, resolve_dtype
from encoders.loading import (
    is_decoder,
    load_base_model,
    load_tokenizer,
    model_dtype,
    quantize_int8,
    resolve_model_path,
)
from encoders.onnx_int8 import OnnxForward, attach_onnx, int8_backend
from encoders.pooling import pool, pool_start
from encoders.types import EncodeOptions, Tokenized, TrainablePooler, encoder_class
from encoders.vectors import l2_normalize


class Encoder:
    def __init__(self, config: EncoderConfig, model: nn.Module, tokenizer: PreTrainedTokenizerBase):
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.decoder = is_decoder(getattr(model, "config", None))
        if self.decoder:
            set_bidirectional(model, config.attention == "bidirectional")
        self._lock = ForwardLock()  # one forward at a time, queries before job documents
        self._dim: int | None = None
        self.pooler: TrainablePooler | None = None
        # what the model computes in on this machine (config "auto" resolved, EMBER_DTYPE):
        # recorded with each build and cache entry; not part of the fingerprint
        self.dtype = model_dtype(model)
        self.int8_backend = "torch" if self.dtype == "int8" else None
        self.onnx: OnnxForward | None = None  # int8 in ONNX Runtime (onnx_int8.attach_onnx)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_config(
        cls, config: EncoderConfig, device: str | torch.device = "cpu", *, dtype: str | None = None
    ) -> Encoder:
        """Load base model, adapters and pooler onto ``device``; returns the subclass for
        ``config.kind``. The dtype is resolved for ``device`` here (``auto``, ``EMBER_DTYPE``:
        :func:`encoders.hardware.resolve_dtype`) unless ``dtype`` names one exactly (what
        ``ember export`` writes, whatever the environment), and torch gets one thread per
        available core."""
        klass = encoder_class(config.kind) if cls is Encoder else cls
        configure_threads()
        dtype = (
            resolve_dtype(config.dtype, device)
            if dtype is None
            else resolve_dtype(dtype, device, environment=False)
        )
        backend = int8_backend(dtype, klass, config)  # None unless int8: torch / onnxruntime
        path = resolve_model_path(config.base_model)
        # the ONNX export traces eager attention (the same function as sdpa, step by step)
        attention = "eager" if backend == "onnxruntime" else config.attn_implementation
        model: nn.Module = load_base_model(path, dtype, attention)
        model = apply_adapters(model, config.adapters)
        if backend == "torch":
            model = quantize_int8(model)
        encoder = klass(config, model, load_tokenizer(path))
        if config.pooler:
            from encoders.poolers import load_pooler

            encoder.pooler = load_pooler(config.pooler)
        if backend == "onnxruntime":
            attach_onnx(encoder)
        return encoder if torch.device(device).type == "cpu" else encoder.to(device)

    @classmethod
    def load(cls, folder: str | Path) -> Encoder:
        """Any encoder folder Ember reads (:func:`encoders.folders.folder_config`: an
        ``encoder_config.json`` folder, an LLM2Vec checkpoint, a sentence-transformers folder)."""
        from encoders.folders import FOLDER_KINDS, folder_config

        config = folder_config(Path(folder))
        if config is None:
            raise FileNotFoundError(f"{folder} is not {FOLDER_KINDS}")
        return cls.from_config(config)

    def to(self, device: str | torch.device) -> Encoder:
        """Move the model and any trainable pooler; batches follow the model's device."""
        target = torch.device(device)
        self.model.to(target)
        if self.pooler is not None:
            self.pooler.to(target)
        return self

    def save(self, folder: str | Path) -> Path:
        """Write ``encoder_config.json``; weights stay where the config points."""
        return self.config.save(folder)

    # ---- properties ---------------------------------------------------------------------
    @property
    def dim(self) -> int:
        if self._dim is None:
            hidden = getattr(self.model.config, "hidden_size", None)
            self._dim = int(hidden) if hidden else int(self.encode(["dimension probe"]).shape[1])
        return self._dim

    @property
    def vector_dims(self) -> dict[str, int]:
        """Named vectors this encoder produces (Qdrant named vectors); MoEE adds ``rw``."""
        return {"dense": self.dim}

    def encode_named(
        self, texts: Sequence[str], instruction: str | None = None, **options: Unpack[EncodeOptions]
    ) -> dict[str, np.ndarray]:
        """Vectors per name in :attr:`vector_dims`; plain encoders give ``{"dense": ...}``."""
        return {"dense": self.encode(texts, instruction, **options)}

    def encode_queries_named(
        self, texts: Sequence[str], instruction: str | None = None, *, show_progress: bool = False
    ) -> dict[str, np.ndarray]:
        """Query vectors per name in :attr:`vector_dims` (the query length limit applies)."""
        return self.encode_named(
            texts, instruction, max_length=self.config.query_max_length,
            show_progress=show_progress, query=True,
        )  # fmt: skip

    @property
    def vector_weights(self) -> dict[str, float]:
        """How the named vectors' cosines add up to a score: one ``dense`` vector here; MoEE's
        ``sum`` mode scores ``cos hs + w * cos rw``."""
        return {"dense": 1.0}

    @property
    def fingerprint(self) -> str:
        return self.config.fingerprint()

    def build_info(self) -> dict[str, str]:
        """How this encoder makes vectors here, for the record of a build: the fingerprint (the
        vector contract) and what it leaves out, the dtype run in and torch's CPU capability."""
        return {
            "encoder": self.config.name,
            "fingerprint": self.fingerprint,
            "dtype": self.dtype,
            **({"int8_backend": self.int8_backend} if self.int8_backend else {}),
            "configured_dtype": self.config.dtype,
            "cpu": cpu_capability(),
            "torch": torch.__version__,
        }

    # ---- public API ---------------------------------------------------------------------
    def encode_queries(
        self,
        texts: Sequence[str],
        instruction: str | None = None,
        *,
        show_progress: bool = False,
        normalize: bool | None = None,
    ) -> np.ndarray:
        """Queries get the task instruction prepended (or the config's ``query_prompt``, which
        replaces it); it is left out of mean pooling unless ``pool_prompt``."""
        return self.encode(
            texts, instruction, max_length=self.config.query_max_length,
            show_progress=show_progress, normalize=normalize, query=True,
        )  # fmt: skip

    def encode_documents(
        self, texts: Sequence[str], *, show_progress: bool = False, normalize: bool | None = None
    ) -> np.ndarray:
        """Documents are encoded instruction-free (with the config's ``document_prompt``)."""
        return self.encode(texts, show_progress=show_progress, normalize=normalize)

    def encode(
        self,
        texts: Sequence[str],
        instruction: str | None = None,
        *,
        normalize: bool | None = None,
        **options: Unpack[EncodeOptions],
    ) -> np.ndarray:
        """Vectors of ``texts`` read as queries (``query``: the query prompt rule of
        :meth:`EncoderConfig.prefix`) or documents."""
        return self.finish(self.encode_pooled(texts, instruction, **options), normalize)

    def finish(self, pooled: np.ndarray, normalize: bool | None = None) -> np.ndarray:
        """Pooled vectors -> what :meth:`encode` returns: the corpus-fitted standardisation
        (when configured), then L2 normalisation (unless turned off)."""
        out = pooled
        if self.config.standardize is not None:
            from encoders.standardize import apply

            out = apply(self.config.standardize, out)
        if self.config.normalize if normalize is None else normalize:
            out = l2_normalize(out)
        return out

    def encode_pooled(
        self, texts: Sequence[str], instruction: str | None = None, **options: Unpack[EncodeOptions]
    ) -> np.ndarray:
        """The pooled model output, before standardisation and normalisation."""
        (out,) = self.run_batches(
            texts, instruction, lambda batch: (self.embed_batch(batch),),
            (self._hidden_size_hint(),), **options,
        )  # fmt: skip
        return out

    def run_batches(
        self,
        texts: Sequence[str],
        instruction: str | None,
        forward: Callable[[list[Tokenized]], Sequence[torch.Tensor]],
        widths: Sequence[int],
        *,
        max_length: int | None = None,
        show_progress: bool = False,
        query: bool = False,
    ) -> list[np.ndarray]:
        """The one batching loop (every encoder): tokenise once, ``forward`` on each length-sorted
        token-budget batch under the forward lock, inference mode and :meth:`query_role`; each
        [B, D] output back in input order as float32 (shaped by ``widths`` when empty)."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings, not a single string")
        items = self.tokenize(texts, instruction, max_length or self.config.max_length, query=query)
        outs: list[np.ndarray] | None = None
        with (
            self.query_role(query),
            tqdm(total=len(items), desc="encode", unit="text", disable=not show_progress) as bar,
            torch.inference_mode(),
        ):
            for order in self.batches(items):
                with self._lock:  # per forward: a waiting query goes between two of them
                    parts = forward([items[i] for i in order])
                if outs is None:
                    outs = [np.zeros((len(items), p.shape[1]), dtype=np.float32) for p in parts]
                for out, part in zip(outs, parts, strict=True):
                    out[order] = part.float().cpu().numpy()
                bar.update(len(order))
        return outs if outs is not None else [np.zeros((0, w), dtype=np.float32) for w in widths]

    def query_role(self, query: bool) -> AbstractContextManager[object]:
        """Entered around each batching run; LLaRA pools another branch for queries."""
        return nullcontext()

    # ---- internals ----------------------------------------------------------------------
    def _hidden_size_hint(self) -> int:
        return int(getattr(self.model.config, "hidden_size", 1))

    def compose(
        self, text: str, instruction: str | None, *, query: bool = False
    ) -> tuple[str, int]:
        """The string the model reads and the character where pooling starts.

        Plain: ``prefix + text + text_suffix`` (the prefix: :meth:`EncoderConfig.prefix`), pooled
        from the text, or from the first character with ``pool_prompt``. Echo (Springer et al.
        2024): the text is written twice into ``echo_template`` and only the second copy (and
        ``text_suffix`` after it) is pooled, so with causal attention its tokens have already
        seen the whole text once.
        """
        prefix = self.config.prefix(instruction, query=query)
        suffix = self.config.text_suffix
        if not self.config.echo:
            return prefix + text + suffix, 0 if self.config.pool_prompt else len(prefix)
        head, middle, _ = self.config.echo_template.split("{text}")
        first = prefix + head + text + middle
        return first + text + suffix, len(first)

    def tokenize(
        self,
        texts: Sequence[str],
        instruction: str | None,
        max_length: int,
        *,
        query: bool = False,
    ) -> list[Tokenized]:
        """Tokenise each composed string once; the pooled part starts at the first token whose
        character span ends past the pooling start (offsets, not separator strings).

        For decoders a leading BOS (an empty span) is never pooled, with or without an
        instruction, as in llm2vec; encoder-only models keep [CLS], as sentence-transformers does.
        With ``pool_prompt`` every token is pooled from the first, BOS included (what
        sentence-transformers' ``include_prompt`` does). :meth:`appended_ids` end every item.
        """
        appended = self.appended_ids(max_length)
        composed = [self.compose(t, instruction, query=query) for t in texts]
        everything = self.config.pool_prompt and not self.config.echo
        need_offsets = not everything and (self.decoder or any(start for _, start in composed))
        enc = self.tokenizer(
            [full for full, _ in composed],
            add_special_tokens=True,
            truncation=True,
            max_length=max_length - len(appended),
            return_offsets_mapping=need_offsets,
            return_attention_mask=False,
        )
        items = []
        for row, ids in enumerate(enc["input_ids"]):
            char_start = composed[row][1]
            start = 0
            if need_offsets and (char_start or self.decoder):
                start = pool_start(enc["offset_mapping"][row], char_start)
            items.append(Tokenized(ids=list(ids) + appended, text_start=start))
        return items

    def appended_ids(self, max_length: int) -> list[int]:
        """Token ids put after every tokenised text, inside ``max_length`` (the text is truncated
        to make room): none here; LLaRA appends its prompts."""
        return []

    def batches(self, items: Sequence[Tokenized]) -> Iterator[list[int]]:
        """Indices of ``items`` in length-sorted batches whose padded size fits the token budget."""
        order = sorted(range(len(items)), key=lambda i: -len(items[i].ids))
        budget = self.config.budget_for(next(self.model.parameters()).device.type)
        if is_background():  # smaller forwards, so a query never waits long for one
            budget = max(1, budget // BACKGROUND_BUDGET_DIVISOR)
        batch: list[int] = []
        for i in order:
            longest = len(items[batch[0]].ids) if batch else len(items[i].ids)
            if batch and (
                (len(batch) + 1) * longest > budget or len(batch) >= self.config.max_batch_size
            ):
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch

    def collate(self, items: Sequence[Tokenized]) -> dict[str, torch.Tensor]:
        """Pad a batch; returns input_ids, attention_mask, position_ids and pool_mask."""
        device = next(self.model.parameters()).device
        length = max(len(it.ids) for it in items)
        pad_id = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(items), length), pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), length), dtype=torch.long)
        starts = torch.tensor([it.text_start for it in items])
        for row, it in enumerate(items):
            n = len(it.ids)
            sl = slice(length - n, length) if self.config.padding_side == "left" else slice(0, n)
            ids[row, sl] = torch.tensor(it.ids)
            mask[row, sl] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        pool_mask = mask * (positions >= starts[:, None])
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": positions,
            "pool_mask": pool_mask,
        }
        return {k: v.to(device) for k, v in batch.items()}

    def model_mask(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The attention mask the model gets: the padding mask, 4D for bidirectional decoders."""
        mask = batch["attention_mask"]
        if self.decoder and self.config.attention == "bidirectional":
            return padding_mask_4d(mask, next(self.model.parameters()).dtype)
        return mask

    def hidden_states(self, batch: dict[str, torch.Tensor], all_layers: bool = False) -> object:
        """Run the model with the configured attention; returns the HF model output."""
        if self.onnx is not None:
            return self.onnx(batch)
        return self.model(
            input_ids=batch["input_ids"],
            attention_mask=self.model_mask(batch),
            position_ids=batch["position_ids"],
            output_hidden_states=all_layers,
            use_cache=False,
        )

    def pool_output(self, out: object, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, D] from a model output: the trainable pooler, else :meth:`pool_hidden`."""
        if self.pooler is not None:
            return self.pooler(out, batch)
        return self.pool_hidden(out.last_hidden_state, batch)  # type: ignore[attr-defined]

    def pool_hidden(self, hidden: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The configured pooling of the last hidden state over the batch's pool mask."""
        return pool(hidden, batch["attention_mask"], batch["pool_mask"], self.config.pooling)

    def embed_batch(self, items: Sequence[Tokenized]) -> torch.Tensor:
        batch = self.collate(items)
        all_layers = self.pooler is not None and self.pooler.needs_all_layers
        return self.pool_output(self.hidden_states(batch, all_layers=all_layers), batch)

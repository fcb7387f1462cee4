"""Supervised contrastive training (LLM2Vec step 4).

Each batch holds B examples of one source: B instructed queries against B positives plus
``hard_negatives`` hard negatives per query; every document of the batch is a negative for
every other query (in-batch negatives), except another relevant document of the same query.
The instruction is prepended through the Encoder's token offsets, so pooling skips it, exactly
as at query time. Gradient caching (:mod:`encoders.training.gradcache`) lets a large batch fit:
only ``chunk_size`` texts have a graph at any time.

With ``pooler`` a new trainable pooler (``encoders.poolers``) is trained with the LoRA adapter
(or alone, ``freeze_model``) and saved as ``out/pooler``.

With ``teacher`` (any encoder, e.g. the bundled ``minilm``) every text of the data is encoded
once by the teacher before training; each step then adds, with weight ``distill_weight``, the
KL divergence from the teacher's softmax over the batch's documents to the student's
(:func:`encoders.training.losses.distill_loss`). The teacher reads queries as queries with no
instruction (its own query prompt, if it has one, applies) and documents and STS sentences as
plain text.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from torch import nn

from encoders.encoder import Tokenized
from encoders.training.base import Trainer
from encoders.training.data import (
    ScoredSource,
    Source,
    SourceBatcher,
    read_corpus_pairs,
    read_scored_pairs,
    read_supervised,
)
from encoders.training.gradcache import cached_backward
from encoders.training.losses import contrastive_loss, cosent_loss, distill_loss
from encoders.training.model import POOLER_DIR, LoraSettings, set_dropout
from encoders.training.params import SupervisedParams, default_data_dir


def default_supervised_data() -> list[str]:
    root = default_data_dir()
    return [
        str(root / "train" / "snli_nli_triples_from_senteval_dev_test.jsonl"),
        str(root / "beir" / "scifact"),
    ]


class SupervisedTrainer(Trainer):
    name = "supervised"
    params_type = SupervisedParams
    params: SupervisedParams

    def output_overrides(self, input_config: Any) -> dict[str, Any]:
        update = super().output_overrides(input_config)
        if self.params.pooler:
            update.update(pooling=self.params.pooler, pooler=POOLER_DIR)
        return update

    def lora_settings(self) -> LoraSettings | None:
        return None if self.params.freeze_model else super().lora_settings()

    def read_data(self) -> None:
        p = self.params
        self.sources: list[Source | ScoredSource] = [
            *read_supervised(
                p.data or default_supervised_data(), None, p.mining, p.mining_depth, p.seed
            ),
            *(read_corpus_pairs(Path(c), None, p.seed) for c in p.corpus_pairs),
            *(read_scored_pairs(Path(f), None) for f in p.scored_pairs),
        ]
        for source in self.sources:
            if isinstance(source, ScoredSource):
                source.pairs = source.pairs[: p.max_examples]
            else:
                source.examples = source.examples[: p.max_examples]

    def prepare(self) -> None:
        p = self.params
        self.pooler: nn.Module | None = None
        if p.pooler:
            from encoders.poolers import build_pooler_for

            self.pooler = build_pooler_for(self.encoder, p.pooler, **p.pooler_options)
            self.encoder.pooler = self.pooler
        if p.dropout is not None:
            set_dropout(self.stage.peft_model, p.dropout)
        self.query_items: list[list[Tokenized]] = []
        self.doc_cache: list[dict[str, Tokenized]] = []
        sizes = []
        for source in self.sources:
            if isinstance(source, ScoredSource):
                # Both sides instructed (STS is symmetric and is evaluated that way).
                instruction = source.instruction or None
                self.query_items.append(
                    self.encoder.tokenize(
                        [a for a, _, _ in source.pairs], instruction, p.max_length
                    )
                )
                seconds = self.encoder.tokenize(
                    [b for _, b, _ in source.pairs], instruction, p.max_length
                )
                self.doc_cache.append({str(i): item for i, item in enumerate(seconds)})
                sizes.append(len(source.pairs))
                continue
            queries = [ex.query for ex in source.examples]
            self.query_items.append(
                self.encoder.tokenize(
                    queries, source.instruction or None, p.query_max_length, query=True
                )
            )
            texts = sorted({t for ex in source.examples for t in [ex.positive, *ex.negatives]})
            items = self.encoder.tokenize(texts, None, p.max_length)
            self.doc_cache.append(dict(zip(texts, items, strict=True)))
            sizes.append(len(source.examples))
        self.batcher = SourceBatcher(sizes, p.batch_size, p.seed)
        self.teacher_queries: list[torch.Tensor] = []
        self.teacher_docs: list[dict[str, torch.Tensor]] = []
        if p.teacher:
            self._encode_with_teacher(p.teacher)

    def _encode_with_teacher(self, spec: str) -> None:
        """Teacher vectors of every query and document of every source (fp32, normalised)."""
        from encoders.encoder import Encoder
        from encoders.registry import resolve_config

        teacher = Encoder.from_config(resolve_config(spec), dtype="float32")
        memo: dict[tuple[str, bool], torch.Tensor] = {}

        def vectors(texts: list[str], query: bool) -> torch.Tensor:
            # each distinct text once: a query with several positives, a source given twice
            missing = sorted({t for t in texts if (t, query) not in memo})
            if missing:
                out = teacher.encode(
                    missing, None, query=query, show_progress=self.params.progress, normalize=True
                )
                memo.update(
                    zip(((t, query) for t in missing), torch.from_numpy(out).float(), strict=True)
                )
            return torch.stack([memo[t, query] for t in texts])

        for source in self.sources:
            if isinstance(source, ScoredSource):
                self.teacher_queries.append(vectors([a for a, _, _ in source.pairs], False))
                seconds = vectors([b for _, b, _ in source.pairs], False)
                self.teacher_docs.append({str(i): v for i, v in enumerate(seconds)})
                continue
            self.teacher_queries.append(vectors([ex.query for ex in source.examples], True))
            texts = sorted({t for ex in source.examples for t in [ex.positive, *ex.negatives]})
            self.teacher_docs.append(dict(zip(texts, vectors(texts, False), strict=True)))

    def extra_modules(self) -> dict[str, nn.Module]:
        pooler = getattr(self, "pooler", None)
        return {"pooler": pooler} if pooler is not None else {}

    def new_pooler(self) -> nn.Module | None:
        return getattr(self, "pooler", None)

    def _batch_texts(self, step: int) -> tuple[int, list[int], list[str], list[str]]:
        """Source, rows, and the document texts and keys of batch ``step``: positives, then
        each query's hard negatives (a function of the seed and the step)."""
        source_index, rows = self.batcher.batch(step)
        source = self.sources[source_index]
        if isinstance(source, ScoredSource):
            return source_index, rows, [str(i) for i in rows], [str(i) for i in rows]
        rng = random.Random(self.params.seed * 1_000_003 + step)
        examples = [source.examples[i] for i in rows]
        doc_texts = [ex.positive for ex in examples]
        doc_keys = [ex.positive_key for ex in examples]
        for ex in examples:
            if not ex.negatives:
                continue
            count = min(self.params.hard_negatives, len(ex.negatives))
            picks = rng.sample(range(len(ex.negatives)), count)
            doc_texts += [ex.negatives[i] for i in picks]
            doc_keys += [ex.negative_keys[i] for i in picks]
        return source_index, rows, doc_texts, doc_keys

    def batch_inputs(self, step: int) -> tuple[list[Tokenized], list[Tokenized], torch.Tensor]:
        """Query items, document items (positives, then hard negatives) and the [Q, D] mask of
        false negatives (another relevant document of the same query) for batch ``step``.
        For a scored source: first sentences, second sentences and the gold scores [B]."""
        source_index, rows, doc_texts, doc_keys = self._batch_texts(step)
        source = self.sources[source_index]
        docs = self.doc_cache[source_index]
        queries = [self.query_items[source_index][i] for i in rows]
        if isinstance(source, ScoredSource):
            scores = torch.tensor([source.pairs[i][2] for i in rows], dtype=torch.float32)
            return queries, [docs[t] for t in doc_texts], scores
        examples = [source.examples[i] for i in rows]
        exclude = torch.zeros(len(examples), len(doc_texts), dtype=torch.bool)
        for qi, ex in enumerate(examples):
            for di, key in enumerate(doc_keys):
                if di != qi and key in ex.positive_keys:
                    exclude[qi, di] = True
        return queries, [docs[t] for t in doc_texts], exclude

    def teacher_scores(self, step: int) -> torch.Tensor:
        """The teacher's cosines [Q, D] between batch ``step``'s queries and documents."""
        source_index, rows, doc_texts, _ = self._batch_texts(step)
        queries = self.teacher_queries[source_index][rows]
        docs = torch.stack([self.teacher_docs[source_index][t] for t in doc_texts])
        return queries @ docs.T

    def train_step(self, step: int) -> dict[str, float]:
        p = self.params
        queries, docs, extra = self.batch_inputs(step)
        scored = isinstance(self.sources[self.batcher.batch(step)[0]], ScoredSource)
        teacher = self.teacher_scores(step) if p.teacher else None
        parts: dict[str, float] = {}

        def loss_fn(reps: list[torch.Tensor]) -> torch.Tensor:
            exclude = None if scored else extra.to(reps[0].device)
            if exclude is None:
                gold = cosent_loss(reps[0], reps[1], extra, p.cosent_scale)
            else:
                gold = contrastive_loss(reps[0], reps[1], p.temperature, exclude)
            if teacher is None:
                return gold
            soft = distill_loss(
                reps[0], reps[1], teacher, p.temperature, p.teacher_temperature, exclude
            )
            parts.update(gold=float(gold.detach()), distill=float(soft.detach()))
            return (1.0 - p.distill_weight) * gold + p.distill_weight * soft

        loss = cached_backward(self.encoder.embed_batch, [queries, docs], loss_fn, p.chunk_size)
        return {"loss": loss, "docs": float(len(docs)), **parts}

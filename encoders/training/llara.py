"""LLaRA pre-training (Li et al., 2023, "Making Large Language Models A Better Foundation For
Dense Retrieval"): EBAE and EBAR with bag-of-words losses.

For a sentence and the sentence that follows it, the model reads
``sentence + EBAE prompt + EBAR prompt`` (branches, see :mod:`encoders.llara`). The mean EBAE
placeholder state, projected by the frozen LM head, must predict the tokens of the sentence
itself (auto-encoding); the mean EBAR placeholder state the tokens of the next sentence
(auto-regression). Each is a multi-label softmax over the vocabulary: the mean of -log p(t) over
the bag of target tokens (special tokens, and by default stop words and punctuation, left out).
The mean placeholder state is exactly the embedding the encoder serves, so the loss trains the
served vector.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from transformers import PreTrainedTokenizerBase

from encoders.config import EncoderConfig
from encoders.llara import LlaraEncoder
from encoders.training.base import Trainer
from encoders.training.data import EpochSampler, read_sentence_pairs
from encoders.training.losses import bow_loss, bow_targets
from encoders.training.mntp import default_mntp_data, special_token_ids
from encoders.training.model import BASE_DIR, StageModel, build_stage_model
from encoders.training.params import LlaraParams

# A short English stop-word list (function words carry no content for the bag-of-words target).
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "then",
        "than",
        "so",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "as",
        "into",
        "onto",
        "over",
        "under",
        "about",
        "above",
        "below",
        "between",
        "through",
        "during",
        "before",
        "after",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "do",
        "does",
        "did",
        "done",
        "has",
        "have",
        "had",
        "having",
        "it",
        "its",
        "it's",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "he",
        "she",
        "they",
        "them",
        "his",
        "her",
        "their",
        "our",
        "we",
        "you",
        "your",
        "i",
        "me",
        "my",
        "mine",
        "yours",
        "not",
        "no",
        "nor",
        "very",
        "can",
        "could",
        "will",
        "would",
        "shall",
        "should",
        "may",
        "might",
        "must",
        "also",
        "which",
        "who",
        "whom",
        "whose",
        "what",
        "when",
        "where",
        "why",
        "how",
        "all",
        "any",
        "both",
        "each",
        "few",
        "more",
        "most",
        "other",
        "some",
        "such",
        "only",
        "own",
        "same",
        "too",
        "just",
        "s",
        "t",
    ]
)
_WORDLIKE = re.compile(r"\w", re.UNICODE)


def bag_of_tokens(
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    exclude: set[int],
    remove_stopwords: bool,
) -> list[list[int]]:
    """Unique target token ids of each text (order of first appearance)."""
    cache: dict[int, bool] = {}

    def keep(token: int) -> bool:
        if token in exclude:
            return False
        if not remove_stopwords:
            return True
        if token not in cache:
            word = str(tokenizer.decode([token])).strip().lower()
            cache[token] = bool(_WORDLIKE.search(word)) and word not in STOPWORDS
        return cache[token]

    bags = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        bags.append([t for t in dict.fromkeys(ids) if keep(t)])
    return bags


class LlaraTrainer(Trainer):
    name = "llara"
    params_type = LlaraParams
    need_lm_head: ClassVar[bool] = True
    default_attention = "causal"
    params: LlaraParams

    def output_overrides(self, input_config: EncoderConfig) -> dict[str, Any]:
        update = super().output_overrides(input_config)
        update.update(kind="llara", echo=False)
        if not self.params.pooling and input_config.pooler is None:
            update["pooling"] = "mean"
        return update

    def build(self, input_config: EncoderConfig) -> StageModel:
        return build_stage_model(
            input_config,
            stage=self.name,
            lora=self.lora_settings(),
            need_lm_head=True,
            output_overrides=self.output_overrides(input_config),
            llara=self.params.settings(),
            llara_base_dir=self.out / BASE_DIR,
            train_placeholders=self.params.train_placeholders,
            seed=self.params.seed,
        )

    def read_data(self) -> None:
        p = self.params
        self.pairs = read_sentence_pairs(p.data or default_mntp_data(), p.data_format)
        self.pairs = self.pairs[: p.max_examples]

    def prepare(self) -> None:
        p = self.params
        encoder = self.encoder
        if not isinstance(encoder, LlaraEncoder):
            raise TypeError("the LLaRA stage needs a LlaraEncoder")
        self.llara = encoder
        pairs = self.pairs
        texts = [a for a, _ in pairs]
        nexts = [b for _, b in pairs]
        tokenizer = encoder.tokenizer
        exclude = special_token_ids(tokenizer)
        self.items = encoder.tokenize(texts, None, p.max_length)
        # The EBAE target is the passage the model actually read (after truncation).
        read = [str(tokenizer.decode(it.ids[: -encoder.layout.prompt_length])) for it in self.items]
        self.ebae_bags = bag_of_tokens(tokenizer, read, exclude, p.remove_stopwords)
        self.ebar_bags = bag_of_tokens(tokenizer, nexts, exclude, p.remove_stopwords)
        self.sampler = EpochSampler(len(self.items), p.batch_size, p.seed)

    def train_step(self, step: int) -> dict[str, float]:
        rows = self.sampler.batch(step)
        ebae, ebar = self.llara.placeholder_embeddings([self.items[i] for i in rows])
        head = self.stage.lm_head
        assert head is not None
        device = ebae.device
        loss_ebae = bow_loss(head(ebae), bow_targets([self.ebae_bags[i] for i in rows], device))
        loss_ebar = bow_loss(head(ebar), bow_targets([self.ebar_bags[i] for i in rows], device))
        loss = loss_ebae + self.params.ebar_weight * loss_ebar
        loss.backward()
        return {
            "loss": float(loss.detach()),
            "ebae": float(loss_ebae.detach()),
            "ebar": float(loss_ebar.detach()),
        }

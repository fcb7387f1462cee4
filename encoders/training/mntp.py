"""MNTP (LLM2Vec step 2): masked next-token prediction with bidirectional attention.

Texts are packed into blocks of ``max_length`` tokens; 20% of the ordinary tokens are masked
(80% -> the mask token, 10% random, 10% kept) and the model, now seeing the whole block, learns
to predict each masked token at position i from its output at position i-1, reusing the
next-token LM head it was pre-trained with.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from transformers import PreTrainedTokenizerBase

from encoders.encoder import Tokenized
from encoders.training.base import Trainer, TrainingError
from encoders.training.data import EpochSampler, pack_blocks, read_texts
from encoders.training.losses import mask_tokens, mntp_loss_from_hidden
from encoders.training.params import MntpParams, default_data_dir

LLM2VEC_MASK = "_"


def default_mntp_data() -> list[str]:
    folder = default_data_dir() / "train" / "wikitext2_pytorch_examples"
    return [str(folder / "valid.txt"), str(folder / "test.txt")]


def resolve_mask_token(tokenizer: PreTrainedTokenizerBase, wanted: str | None) -> tuple[str, int]:
    """The mask token and its id, looked up from the tokenizer: ``wanted``, else the
    tokenizer's own mask token, else ``'_'`` (LLM2Vec's choice for decoders without one)."""
    token = wanted or tokenizer.mask_token or LLM2VEC_MASK
    found = tokenizer.convert_tokens_to_ids(token)
    if isinstance(found, int) and found != tokenizer.unk_token_id:
        return token, found
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise TrainingError(
            f"mask token {token!r} is not a single token of this tokenizer ({len(ids)} tokens)"
        )
    return token, int(ids[0])


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    ids = {int(i) for i in tokenizer.all_special_ids if i is not None}
    for index, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(added, "special", False):
            ids.add(int(index))
    return ids


class MntpTrainer(Trainer):
    name = "mntp"
    params_type = MntpParams
    need_lm_head: ClassVar[bool] = True
    params: MntpParams

    def read_data(self) -> None:
        p = self.params
        self.texts = read_texts(p.data or default_mntp_data(), p.data_format)[: p.max_examples]

    def prepare(self) -> None:
        p = self.params
        tokenizer = self.encoder.tokenizer
        self.blocks = pack_blocks(tokenizer, self.texts, p.max_length)
        self.mask_token, self.mask_id = resolve_mask_token(tokenizer, p.mask_token)
        self.special_ids = special_token_ids(tokenizer)
        self.vocab_size = len(tokenizer)
        self.sampler = EpochSampler(len(self.blocks), p.batch_size, p.seed)

    def train_step(self, step: int) -> dict[str, float]:
        p = self.params
        items = [Tokenized(ids=self.blocks[i], text_start=0) for i in self.sampler.batch(step)]
        batch = self.encoder.collate(items)
        generator = torch.Generator().manual_seed(p.seed * 1_000_003 + step)
        masked, labels = mask_tokens(
            batch["input_ids"].cpu(),
            batch["attention_mask"].cpu(),
            self.special_ids,
            self.mask_id,
            p.mask_prob,
            self.vocab_size,
            generator,
        )
        device = batch["input_ids"].device
        batch["input_ids"] = masked.to(device)
        hidden = self.encoder.hidden_states(batch).last_hidden_state  # type: ignore[attr-defined]
        assert self.stage.lm_head is not None
        loss = mntp_loss_from_hidden(hidden, labels.to(device), self.stage.lm_head)
        loss.backward()
        return {"loss": float(loss.detach()), "masked": float((labels != -100).sum())}

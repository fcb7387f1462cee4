"""Unsupervised SimCSE (LLM2Vec step 3): each sentence is embedded twice with dropout on; the
two views are positives, the other sentences of the batch negatives (InfoNCE, temperature
0.05). LLM2Vec raises both the model's attention dropout and the LoRA dropout to 0.3."""

from __future__ import annotations

from encoders.training.base import Trainer
from encoders.training.data import EpochSampler, read_texts
from encoders.training.losses import contrastive_loss
from encoders.training.model import LoraSettings, set_dropout
from encoders.training.params import SimcseParams, default_data_dir


def default_simcse_data() -> list[str]:
    folder = default_data_dir() / "train" / "simcse_wiki1m_prefix"
    return [str(folder / "wiki1m_for_simcse.first_1.28MB.txt")]


class SimcseTrainer(Trainer):
    name = "simcse"
    params_type = SimcseParams
    params: SimcseParams

    def lora_settings(self) -> LoraSettings | None:
        settings = super().lora_settings()
        assert settings is not None
        settings.dropout = self.params.dropout
        return settings

    def read_data(self) -> None:
        p = self.params
        self.texts = read_texts(p.data or default_simcse_data(), p.data_format)[: p.max_examples]

    def prepare(self) -> None:
        p = self.params
        set_dropout(self.stage.peft_model, p.dropout)
        self.items = self.encoder.tokenize(self.texts, None, p.max_length)
        self.sampler = EpochSampler(len(self.items), p.batch_size, p.seed)

    def train_step(self, step: int) -> dict[str, float]:
        items = [self.items[i] for i in self.sampler.batch(step)]
        first = self.encoder.embed_batch(items)
        second = self.encoder.embed_batch(items)  # new dropout masks: the positive view
        loss = contrastive_loss(first, second, self.params.temperature)
        loss.backward()
        return {"loss": float(loss.detach())}

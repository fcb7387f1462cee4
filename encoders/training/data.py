"""Training data: the documented JSONL formats (docs/training.md) and readers for the native
formats of the shared files (WikiText-2 raw, SimCSE's wiki1m lines, SenEval SNLI triples, BEIR
folders). A bad record fails the run with its file and line number; nothing is dropped silently.

Sampling is stateless: the examples of step ``s`` are a function of (seed, s), so a resumed run
reads exactly the batches the uninterrupted run would have read (the data position is the step).

The supervised contrastive readers are in :mod:`encoders.training.pairs` (re-exported here).
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Sequence
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from encoders.jsonl import iter_jsonl
from encoders.training.pairs import NLI_INSTRUCTION as NLI_INSTRUCTION
from encoders.training.pairs import Example as Example
from encoders.training.pairs import ScoredSource as ScoredSource
from encoders.training.pairs import Source as Source
from encoders.training.pairs import read_beir_train as read_beir_train
from encoders.training.pairs import read_corpus_pairs as read_corpus_pairs
from encoders.training.pairs import read_scored_pairs as read_scored_pairs
from encoders.training.pairs import read_supervised as read_supervised
from encoders.training.pairs import read_supervised_jsonl as read_supervised_jsonl
from encoders.training.records import DataError as DataError
from encoders.training.records import _check, split_sentences, text_field

# ---- generic readers -------------------------------------------------------------------------
_HEADING = re.compile(r"^\s*(= )+.*( =)+\s*$")


def detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if path.suffix == ".jsonl":
        return "jsonl"
    with path.open(encoding="utf-8") as stream:
        head = [next(stream, "") for _ in range(20)]
    return "wikitext" if any(_HEADING.match(line) for line in head if line.strip()) else "lines"


def clean_wikitext(text: str) -> str:
    """Undo WikiText's tokenisation artefacts (`` @-@ ``, `` @,@ ``, `` @.@ ``)."""
    text = text.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    return " ".join(text.split())


def wikitext_paragraphs(path: Path) -> list[str]:
    out = []
    with path.open(encoding="utf-8") as stream:
        for line in stream:
            if not line.strip() or _HEADING.match(line):
                continue
            out.append(clean_wikitext(line))
    return out


def read_texts(paths: Sequence[str | Path], fmt: str = "auto") -> list[str]:
    """Texts for MNTP / SimCSE. JSONL ``{"text": ...}``; ``lines``: one text per non-empty line;
    ``wikitext``: one paragraph per line, headings skipped."""
    texts: list[str] = []
    for raw in paths:
        path = _check(Path(raw))
        kind = detect_format(path, fmt)
        if kind == "jsonl":
            texts.extend(
                text_field(rec, "text", f"{path}:{n}") for n, rec in iter_jsonl(path, DataError)
            )
        elif kind == "wikitext":
            texts.extend(wikitext_paragraphs(path))
        else:
            with path.open(encoding="utf-8") as stream:
                texts.extend(line.strip() for line in stream if line.strip())
    if not texts:
        raise DataError(f"no training texts in {', '.join(map(str, paths))}")
    return texts


def read_sentence_pairs(
    paths: Sequence[str | Path], fmt: str = "auto", min_words: int = 4
) -> list[tuple[str, str]]:
    """(text, next text) pairs for LLaRA's EBAE/EBAR. JSONL ``{"text": ..., "next": ...}``;
    ``wikitext``: consecutive sentences of a paragraph; ``lines``: consecutive lines."""
    pairs: list[tuple[str, str]] = []
    for raw in paths:
        path = _check(Path(raw))
        kind = detect_format(path, fmt)
        if kind == "jsonl":
            for n, rec in iter_jsonl(path, DataError):
                where = f"{path}:{n}"
                pairs.append((text_field(rec, "text", where), text_field(rec, "next", where)))
            continue
        if kind == "wikitext":
            groups = [split_sentences(p) for p in wikitext_paragraphs(path)]
        else:
            with path.open(encoding="utf-8") as stream:
                groups = [[line.strip() for line in stream if line.strip()]]
        for sentences in groups:
            kept = [s for s in sentences if len(s.split()) >= min_words]
            pairs.extend(itertools.pairwise(kept))
    if not pairs:
        raise DataError(f"no (text, next) pairs in {', '.join(map(str, paths))}")
    return pairs


# ---- token blocks for MNTP -------------------------------------------------------------------
def special_affixes(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """Ids the tokenizer adds before and after a text (e.g. BOS / EOS), found by comparison."""
    probe = "hello world"
    plain = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    return [], []


def pack_blocks(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], block_length: int
) -> list[list[int]]:
    """Concatenate the tokenised texts (EOS between them when the tokenizer has one) and cut the
    stream into blocks of ``block_length`` tokens, each wrapped in the tokenizer's special
    tokens (LLM2Vec's ``group_texts``: no padding is wasted)."""
    prefix, suffix = special_affixes(tokenizer)
    room = block_length - len(prefix) - len(suffix)
    if room < 2:
        raise DataError(f"max_length {block_length} is too short for a training block")
    sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream: list[int] = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.extend(sep)
    blocks = [
        prefix + stream[i : i + room] + suffix for i in range(0, len(stream) - room + 1, room)
    ]
    if not blocks:
        raise DataError(f"the data holds fewer than {room} tokens: no full training block")
    return blocks


# ---- stateless sampling ----------------------------------------------------------------------
class EpochSampler:
    """Batch ``s`` = positions ``s*B .. s*B+B-1`` of an endless stream of seeded permutations."""

    def __init__(self, size: int, batch_size: int, seed: int) -> None:
        if size < batch_size:
            raise DataError(f"{size} examples are fewer than one batch of {batch_size}")
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            order = list(range(self.size))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._perms = {epoch: order}  # keep one epoch: steps go forward
        return self._perms[epoch]

    def batch(self, step: int) -> list[int]:
        # Whole batches per epoch (drop the ragged tail), so a batch never repeats an example.
        per_epoch = self.size // self.batch_size
        epoch, index = divmod(step, per_epoch)
        start = index * self.batch_size
        return self._perm(epoch)[start : start + self.batch_size]

    def epoch_of(self, step: int) -> int:
        return step // (self.size // self.batch_size)


class SourceBatcher:
    """Batches that never mix sources: each epoch shuffles every source's examples, cuts them
    into whole batches and shuffles the batch order (seeded by epoch)."""

    def __init__(self, sizes: Sequence[int], batch_size: int, seed: int) -> None:
        self.sizes = list(sizes)
        self.batch_size = batch_size
        self.seed = seed
        self.per_epoch = sum(n // batch_size for n in self.sizes)
        if self.per_epoch == 0:
            raise DataError(f"no data source holds one batch of {batch_size} examples")
        self._epoch: tuple[int, list[tuple[int, list[int]]]] | None = None

    def _batches(self, epoch: int) -> list[tuple[int, list[int]]]:
        if self._epoch is None or self._epoch[0] != epoch:
            rng = random.Random(self.seed * 1_000_003 + epoch)
            batches = []
            for source, n in enumerate(self.sizes):
                order = list(range(n))
                rng.shuffle(order)
                for i in range(n // self.batch_size):
                    batches.append((source, order[i * self.batch_size : (i + 1) * self.batch_size]))
            rng.shuffle(batches)
            self._epoch = (epoch, batches)
        return self._epoch[1]

    def batch(self, step: int) -> tuple[int, list[int]]:
        epoch, index = divmod(step, self.per_epoch)
        return self._batches(epoch)[index]

"""The Echo-embeddings prefix test (Springer et al. 2024, "Repetition Improves Language Model
Embeddings", Sec. 3 and Fig. 2C).

Definition used here. For a triple (q, s+, s-):

1. The shared prefix A is the longest common prefix of the three sentences in whitespace-separated
   words (e.g. "She loves to travel in summer,"). Triples with no shared word (the paper's
   structures where s+ is a paraphrase) are not prefix probes: they are counted as ``skipped``.
2. Each *full* sentence is encoded (with the optional instruction). A's tokens inside a sentence
   are the tokens from the first text token up to where the tokenisation of the sentence stops
   agreeing with the tokenisation of A alone.
3. The prefix representation is the encoder's pooling restricted to those tokens (mean and
   weighted mean over them; ``last_token`` = A's last token; ``first_token`` = A's first token).
4. d = cos(q_A, s+_A) - cos(q_A, s-_A). The triple is a win if d > ``tol``, a tie if |d| <= tol,
   a loss otherwise. Accuracy = (wins + ties / 2) / probes, so 0.5 is chance.

Under causal attention A's tokens cannot see what follows A, and A is the same in all three
sentences, so the three prefix representations are identical: every probe is a tie and the test
sits at chance (0.5) by construction. Only an encoder whose prefix tokens see later tokens
(bidirectional attention, or echo repetition where the second copy sees the first) can do better.

The paper's classical test on whole sentences (accuracy of cos(q, s+) > cos(q, s-) over every
triple, by structure) is reported alongside as ``full_sentence``.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from encoders.vectors import l2_normalize
from indexer.evaluation.cache import SIMPLE_POOLINGS
from indexer.evaluation.data import EchoTriple

if TYPE_CHECKING:
    from encoders import Encoder

TIE_TOL = 1e-5


def shared_word_count(texts: Sequence[str]) -> int:
    """Number of leading whitespace-separated words that all ``texts`` share."""
    words = [t.split() for t in texts]
    n = 0
    for column in zip(*words, strict=False):
        if any(w != column[0] for w in column):
            break
        n += 1
    return n


def word_prefix(text: str, n_words: int) -> str:
    """``text`` up to the end of its ``n_words``-th word (original spacing kept)."""
    if n_words <= 0:
        return ""
    matches = list(re.finditer(r"\S+", text))
    return text[: matches[n_words - 1].end()]


def shared_word_prefix(texts: Sequence[str]) -> str:
    """Longest common prefix of ``texts`` in whitespace-separated words ('' if none), as it
    appears in the first text."""
    return word_prefix(texts[0], shared_word_count(texts)) if texts else ""


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def prefix_vectors(
    encoder: Encoder,
    sentences: Sequence[str],
    prefixes: Sequence[str],
    poolings: Sequence[str] | None = None,
    *,
    instruction: str | None = None,
) -> dict[str, np.ndarray]:
    """For each sentence, its representation pooled over only the tokens of its prefix (the
    sentence is encoded whole). Returns one L2-normalised ``[n, dim]`` array per pooling mode."""
    import torch

    from encoders.pooling import pool

    modes = list(poolings or [encoder.config.pooling])
    bad = [m for m in modes if m not in SIMPLE_POOLINGS]
    if bad:
        raise ValueError(f"the prefix test supports poolings {SIMPLE_POOLINGS}, not {bad}")
    if len(sentences) != len(prefixes):
        raise ValueError("one prefix per sentence")
    for s, p in zip(sentences, prefixes, strict=True):
        if not p or not s.startswith(p):
            raise ValueError(f"{p!r} is not a non-empty prefix of {s!r}")
    length = encoder.config.max_length
    full = encoder.tokenize(sentences, instruction, length)
    alone = encoder.tokenize(prefixes, instruction, length)
    ends = []
    for i, (f, a) in enumerate(zip(full, alone, strict=True)):
        if encoder.config.echo:  # the pooled (second) copies agree up to where A ends
            end = f.text_start + _common_length(f.ids[f.text_start :], a.ids[a.text_start :])
        else:
            end = _common_length(f.ids, a.ids)
        if end <= f.text_start:
            raise ValueError(f"prefix {prefixes[i]!r} has no tokens of its own in {sentences[i]!r}")
        ends.append(end)
    out: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        for order in encoder.batches(full):
            batch = encoder.collate([full[i] for i in order])
            hidden = encoder.hidden_states(batch).last_hidden_state  # type: ignore[attr-defined]
            starts = torch.tensor([full[i].text_start for i in order], device=hidden.device)
            stops = torch.tensor([ends[i] for i in order], device=hidden.device)
            pos = batch["position_ids"]
            mask = batch["attention_mask"] * (pos >= starts[:, None]) * (pos < stops[:, None])
            for mode in modes:
                vecs = pool(hidden, mask, mask, mode).float().cpu().numpy()
                if mode not in out:
                    out[mode] = np.zeros((len(full), vecs.shape[1]), dtype=np.float32)
                out[mode][order] = vecs
    return {m: l2_normalize(v) for m, v in out.items()}


@dataclass(frozen=True)
class EchoResult:
    accuracy: float
    wins: int
    ties: int
    losses: int
    skipped: int
    pooling: str
    full_sentence: dict[str, float] = field(default_factory=dict)
    per_triple: list[dict[str, object]] = field(default_factory=list)

    @property
    def probes(self) -> int:
        return self.wins + self.ties + self.losses

    def as_dict(self, *, with_triples: bool = False) -> dict[str, object]:
        out: dict[str, object] = {
            "prefix_accuracy": self.accuracy,
            "probes": self.probes,
            "wins": self.wins,
            "ties": self.ties,
            "losses": self.losses,
            "skipped": self.skipped,
            "pooling": self.pooling,
            "full_sentence_accuracy": self.full_sentence,
        }
        if with_triples:
            out["triples"] = self.per_triple
        return out


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a.astype(np.float64), b.astype(np.float64)))


def echo_prefix_test(
    encoder: Encoder,
    triples: Sequence[EchoTriple],
    *,
    instruction: str | None = None,
    poolings: Sequence[str] | None = None,
    tol: float = TIE_TOL,
    full_sentence: bool = True,
) -> dict[str, EchoResult]:
    """Run the prefix test (and the whole-sentence test) for each pooling mode (default: the
    encoder's own); returns one :class:`EchoResult` per mode."""
    modes = list(poolings or [encoder.config.pooling])
    probes = [(t, shared_word_count([t.query, t.positive, t.negative])) for t in triples]
    usable = [(t, n) for t, n in probes if n > 0]
    skipped = len(triples) - len(usable)
    if not usable:
        raise ValueError("no triple has a shared word prefix: nothing to probe")
    sentences = [s for t, _ in usable for s in (t.query, t.positive, t.negative)]
    prefixes = [word_prefix(s, n) for t, n in usable for s in (t.query, t.positive, t.negative)]
    vectors = prefix_vectors(encoder, sentences, prefixes, modes, instruction=instruction)

    whole: dict[str, np.ndarray] = {}
    if full_sentence:
        from indexer.evaluation.cache import pool_variants

        texts = [s for t in triples for s in (t.query, t.positive, t.negative)]
        if modes == [encoder.config.pooling]:  # the encoder's own path (custom embed_batch too)
            whole = {modes[0]: encoder.encode(texts, instruction=instruction)}
        else:
            whole = pool_variants(encoder, texts, modes, instruction=instruction)

    results = {}
    for mode in modes:
        v = vectors[mode]
        rows: list[dict[str, object]] = []
        for n, (t, _) in enumerate(usable):
            q, pos, neg = v[3 * n], v[3 * n + 1], v[3 * n + 2]
            prefix = prefixes[3 * n]
            d = _cos(q, pos) - _cos(q, neg)
            outcome = "win" if d > tol else "tie" if d >= -tol else "loss"
            rows.append({"id": t.id, "prefix": prefix, "margin": d, "outcome": outcome})
        by_structure: dict[str, float] = {}
        if full_sentence:
            w = whole[mode]
            hits: dict[str, list[bool]] = defaultdict(list)
            for n, t in enumerate(triples):
                q, pos, neg = w[3 * n], w[3 * n + 1], w[3 * n + 2]
                hit = _cos(q, pos) > _cos(q, neg)
                hits[t.structure or "all"].append(hit)
                if t.structure:
                    hits["all"].append(hit)
            by_structure = {k: float(np.mean(h)) for k, h in sorted(hits.items())}
        tally = Counter(row["outcome"] for row in rows)
        results[mode] = EchoResult(
            accuracy=(tally["win"] + tally["tie"] / 2) / len(usable),
            wins=tally["win"],
            ties=tally["tie"],
            losses=tally["loss"],
            skipped=skipped,
            pooling=mode,
            full_sentence=by_structure,
            per_triple=rows,
        )
    return results

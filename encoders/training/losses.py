"""Losses and masking for the training stages."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100


# ---- MNTP ------------------------------------------------------------------------------------
def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    special_ids: Collection[int],
    mask_id: int,
    mask_prob: float,
    vocab_size: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-style masking for MNTP; returns (masked inputs, labels).

    Candidates are real (non-padding), non-special tokens that have a real token before them
    (the first token of a row has no position i-1 to be predicted from). Each candidate is
    selected with ``mask_prob``; of those, 80% become ``mask_id``, 10% a random ordinary token,
    10% stay. ``labels`` holds the original id at selected positions and ``IGNORE`` elsewhere.
    """
    real = attention_mask.bool()
    first_real = (attention_mask.cumsum(dim=1) == 1) & real
    special = torch.zeros_like(real)
    for sid in special_ids:
        special |= input_ids == sid
    candidates = real & ~special & ~first_real
    draw = torch.rand(input_ids.shape, generator=generator)
    selected = candidates & (draw < mask_prob)
    if not selected.any() and candidates.any():
        # Never an empty loss: take one candidate.
        flat = candidates.flatten().nonzero().squeeze(1)
        pick = flat[torch.randint(len(flat), (1,), generator=generator)]
        selected = selected.flatten().clone()
        selected[pick] = True
        selected = selected.view_as(candidates)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE))
    how = torch.rand(input_ids.shape, generator=generator)
    masked = input_ids.clone()
    masked[selected & (how < 0.8)] = mask_id
    randomize = selected & (how >= 0.8) & (how < 0.9)
    ordinary = torch.tensor(
        sorted(set(range(vocab_size)) - set(special_ids)), dtype=input_ids.dtype
    )
    picks = ordinary[torch.randint(len(ordinary), input_ids.shape, generator=generator)]
    masked[randomize] = picks[randomize]
    return masked, labels


def shift_for_mntp(labels: torch.Tensor) -> torch.Tensor:
    """The target of position i-1 is the label of position i: [B, L] -> [B, L-1].

    A decoder predicts token i from the state at i-1 (that is what its LM head was trained
    for), so MNTP reads the prediction of a masked token at i from the logits at i-1.
    """
    return labels[:, 1:]


def mntp_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of masked tokens from the previous position's logits ([B, L, V])."""
    targets = shift_for_mntp(labels)
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE
    )


def mntp_loss_from_hidden(
    hidden: torch.Tensor, labels: torch.Tensor, lm_head: nn.Module
) -> torch.Tensor:
    """``mntp_loss`` with the LM head applied only to the positions that predict a masked
    token (the vocabulary projection of every position would dominate a small model's cost)."""
    targets = shift_for_mntp(labels)
    keep = targets != IGNORE
    logits = lm_head(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep])


# ---- contrastive -----------------------------------------------------------------------------
def contrastive_loss(
    queries: torch.Tensor,
    docs: torch.Tensor,
    temperature: float,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE over cosine similarities: query i's positive is document i; every other document
    (other queries' positives, all hard negatives) is a negative. ``exclude`` [Q, D] removes
    false negatives (another relevant document of the same query). Computed in fp32 under
    any autocast: bf16 cosines divided by a small temperature would be too coarse."""
    with torch.autocast(queries.device.type, enabled=False):
        q = F.normalize(queries.float(), dim=-1)
        d = F.normalize(docs.float(), dim=-1)
        scores = q @ d.T / temperature
        if exclude is not None:
            scores = scores.masked_fill(exclude, torch.finfo(scores.dtype).min)
        labels = torch.arange(q.shape[0], device=q.device)
        return F.cross_entropy(scores, labels)


def cosent_loss(
    first: torch.Tensor, second: torch.Tensor, scores: torch.Tensor, scale: float = 20.0
) -> torch.Tensor:
    """CoSENT (Su, 2022): for every two pairs where pair i has the higher gold score, penalise
    cos_j > cos_i: log(1 + sum exp(scale * (cos_j - cos_i))). Uses only the order of the gold
    scores, in fp32 under any autocast."""
    with torch.autocast(first.device.type, enabled=False):
        cos = F.cosine_similarity(first.float(), second.float(), dim=-1) * scale
        gold = scores.to(cos.device)
        diff = cos[None, :] - cos[:, None]  # [i, j] = cos_j - cos_i
        ordered = gold[:, None] > gold[None, :]
        terms = torch.cat([diff.new_zeros(1), diff[ordered]])
        return torch.logsumexp(terms, dim=0)


def distill_loss(
    queries: torch.Tensor,
    docs: torch.Tensor,
    teacher_scores: torch.Tensor,
    temperature: float,
    teacher_temperature: float,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """In-batch distillation: KL(teacher || student) between each query's softmax over the
    batch's documents, the student's from its cosines at ``temperature``, the teacher's from
    its cosines ``teacher_scores`` [Q, D] at ``teacher_temperature`` (RocketQAv2 / GPL-style
    soft labels: a BM25 "negative" the teacher finds relevant is not pushed away). ``exclude``
    leaves the same cells out of both distributions. fp32 under any autocast."""
    with torch.autocast(queries.device.type, enabled=False):
        q = F.normalize(queries.float(), dim=-1)
        d = F.normalize(docs.float(), dim=-1)
        student = q @ d.T / temperature
        teacher = teacher_scores.to(student.device).float() / teacher_temperature
        if exclude is not None:
            low = torch.finfo(student.dtype).min
            student = student.masked_fill(exclude, low)
            teacher = teacher.masked_fill(exclude, low)
        target = F.softmax(teacher, dim=-1)
        return F.kl_div(F.log_softmax(student, dim=-1), target, reduction="batchmean")


# ---- LLaRA bag of words ----------------------------------------------------------------------
def bow_targets(bags: Sequence[Sequence[int]], device: torch.device) -> torch.Tensor:
    """Pad bags of token ids to [B, T] with ``IGNORE``."""
    width = max(1, max(len(b) for b in bags))
    out = torch.full((len(bags), width), IGNORE, dtype=torch.long)
    for row, bag in enumerate(bags):
        out[row, : len(bag)] = torch.tensor(list(bag), dtype=torch.long)
    return out.to(device)


def bow_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Multi-label softmax loss: -mean over the bag of log softmax(logits)[token], per row,
    averaged over rows that have a bag (LLaRA's EBAE/EBAR objective)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    keep = targets != IGNORE
    picked = logp.gather(1, targets.clamp(min=0)) * keep
    counts = keep.sum(dim=1)
    rows = counts > 0
    if not rows.any():
        return logits.sum() * 0.0
    return -(picked.sum(dim=1)[rows] / counts[rows]).mean()

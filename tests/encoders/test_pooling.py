from __future__ import annotations

import pytest
import torch

from encoders.pooling import pool

# batch of 2, length 4, hidden 1: values equal to positions make the expected results readable
HIDDEN = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])[..., None]
RIGHT = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])  # row 0 right-padded
LEFT = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])  # row 0 left-padded


def test_mean_ignores_padding() -> None:
    assert pool(HIDDEN, RIGHT, RIGHT, "mean")[:, 0].tolist() == [2.0, 2.5]
    assert pool(HIDDEN, LEFT, LEFT, "mean")[:, 0].tolist() == [3.0, 2.5]


def test_mean_ignores_instruction_tokens() -> None:
    pool_mask = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1]])  # instruction = first token(s)
    assert pool(HIDDEN, RIGHT, pool_mask, "mean")[:, 0].tolist() == [2.5, 3.5]


def test_weighted_mean_weights_later_text_tokens_more() -> None:
    # text tokens at positions 1..3 get weights 1,2,3 -> (2*1 + 3*2 + 4*3) / 6
    pool_mask = torch.tensor([[0, 1, 1, 1]] * 2)
    got = pool(HIDDEN, torch.ones(2, 4, dtype=torch.long), pool_mask, "weighted_mean")
    assert got[0, 0].item() == pytest.approx(20 / 6)


def test_last_and_first_token_follow_padding_side() -> None:
    assert pool(HIDDEN, RIGHT, RIGHT, "last_token")[:, 0].tolist() == [3.0, 4.0]
    assert pool(HIDDEN, LEFT, LEFT, "last_token")[:, 0].tolist() == [4.0, 4.0]
    assert pool(HIDDEN, RIGHT, RIGHT, "first_token")[:, 0].tolist() == [1.0, 1.0]
    assert pool(HIDDEN, LEFT, LEFT, "first_token")[:, 0].tolist() == [2.0, 1.0]


def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown pooling mode"):
        pool(HIDDEN, RIGHT, RIGHT, "max")

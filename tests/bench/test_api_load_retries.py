"""bench/api_load.py's client on 429: it waits Retry-After (plus jitter) and retries, counting.
No real sleeping: the sleep and the clock are injected."""

from __future__ import annotations

import asyncio
import email.utils
import random
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest

from tests.scripts import load_script


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script("bench_api_load", "bench/api_load.py")


@dataclass
class Reply:
    status_code: int
    headers: dict[str, str] = field(default_factory=dict)


class FakeServer:
    """Answers from a script of replies; records when (fake clock) each request came."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = list(replies)
        self.now = 0.0
        self.calls: list[float] = []
        self.sleeps: list[float] = []

    async def send(self) -> Reply:
        self.calls.append(self.now)
        return self.replies.pop(0)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def run(bench: ModuleType, server: FakeServer, **options: Any) -> Any:
    return asyncio.run(
        bench.send_with_retries(
            server.send, sleep=server.sleep, clock=server.clock, rng=random.Random(1), **options
        )
    )


def busy(after: str = "2") -> Reply:
    return Reply(429, {"retry-after": after})


def test_a_429_waits_its_retry_after_then_retries(bench: ModuleType) -> None:
    server = FakeServer([busy(), busy(), Reply(200)])
    outcome = run(bench, server)
    assert (outcome.key, outcome.retries, outcome.gave_up) == ("200", 2, False)
    assert len(server.sleeps) == 2
    for delay in server.sleeps:  # Retry-After is the minimum; jitter adds at most 25 %
        assert 2.0 <= delay <= 2.0 * (1 + bench.RETRY_JITTER)
    assert server.sleeps[0] != server.sleeps[1]  # jittered, not in step
    assert outcome.waited_s == pytest.approx(sum(server.sleeps))
    assert server.calls[1] >= 2.0 and server.calls[2] >= 4.0


def test_ignoring_retry_after_returns_the_429_at_once(bench: ModuleType) -> None:
    server = FakeServer([busy(), Reply(200)])
    outcome = run(bench, server, honour_retry_after=False)
    assert (outcome.key, outcome.retries, outcome.gave_up) == ("429", 0, False)
    assert server.sleeps == [] and len(server.calls) == 1


def test_gives_up_after_max_retries_or_at_the_deadline(bench: ModuleType) -> None:
    server = FakeServer([busy("1")] * 4)
    outcome = run(bench, server, max_retries=3)
    assert (outcome.key, outcome.retries, outcome.gave_up) == ("429", 3, True)
    assert len(server.calls) == 4

    server = FakeServer([busy("5"), Reply(200)])
    outcome = run(bench, server, deadline=3.0)  # waiting 5 s would pass the deadline
    assert (outcome.key, outcome.gave_up) == ("429", True)
    assert server.sleeps == []


def test_retry_after_forms(bench: ModuleType) -> None:
    assert bench.retry_after_s({"retry-after": "3"}) == 3.0
    assert bench.retry_after_s({"retry-after": " 0.5 "}) == 0.5
    assert bench.retry_after_s({"retry-after": "-4"}) == 0.0
    date = email.utils.formatdate(1_000_010.0, usegmt=True)
    assert bench.retry_after_s({"retry-after": date}, now=1_000_000.0) == pytest.approx(10.0)
    assert bench.retry_after_s({"retry-after": date}, now=2_000_000.0) == 0.0
    assert bench.retry_after_s({"retry-after": "soon"}) == bench.DEFAULT_RETRY_S
    assert bench.retry_after_s({}) == bench.DEFAULT_RETRY_S

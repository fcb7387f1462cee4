"""MicroBatcher on the real (tiny) encoder: fewer forwards than requests, same vectors."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from encoders.instructions import TASKS
from search_api import served
from search_api.batcher import MicroBatcher, Mode

QUERIES = [f"query number {i} about {w}" for i, w in enumerate("abcdefghijklmnop")]
INSTRUCTIONS = [TASKS["scifact"], TASKS["nq"]]


class Recorder:
    def __init__(self) -> None:
        self.batches: list[int] = []
        self.depths: list[int] = []

    def batch(self, size: int, seconds: float) -> None:
        self.batches.append(size)

    def depth(self, depth: int) -> None:
        self.depths.append(depth)


def encode_fn(encoder: Any) -> Any:
    return served.encode_fn(encoder)  # what the API gives its batchers


async def run_batched(
    batcher: MicroBatcher, calls: list[tuple[list[str], Mode, str | None]]
) -> Any:
    await batcher.start()
    try:
        return await asyncio.gather(*(batcher.encode(t, m, i) for t, m, i in calls))
    finally:
        await batcher.stop()


def test_concurrent_queries_share_forwards_and_match_unbatched(
    encoder: Any, forwards: list[int]
) -> None:
    calls: list[tuple[list[str], Mode, str | None]] = [
        ([q], "query", INSTRUCTIONS[i % 2]) for i, q in enumerate(QUERIES)
    ]
    calls.append((["a document", "another document"], "document", None))
    rec = Recorder()
    batcher = MicroBatcher(
        encode_fn(encoder), max_batch=64, max_wait_s=0.5, on_batch=rec.batch, on_depth=rec.depth
    )
    results = asyncio.run(run_batched(batcher, calls))

    # one forward per (mode, instruction) group, not one per request
    assert len(forwards) == 3 < len(calls)
    assert sorted(rec.batches) == [2, 8, 8]
    assert max(rec.depths) == len(calls) and rec.depths[-1] == 0
    forwards.clear()
    for (texts, mode, instruction), got in zip(calls, results, strict=True):
        alone = encoder.encode_queries(texts, instruction) if mode == "query" else (
            encoder.encode_documents(texts)
        )  # fmt: skip
        assert list(got) == ["dense"] and got["dense"].shape == alone.shape
        np.testing.assert_allclose(got["dense"], alone, atol=1e-5, rtol=0)
    assert len(forwards) == len(calls)  # unbatched: one forward each


def test_batching_off_runs_one_call_per_request(encoder: Any, forwards: list[int]) -> None:
    rec = Recorder()
    batcher = MicroBatcher(encode_fn(encoder), enabled=False, on_batch=rec.batch)
    calls: list[tuple[list[str], Mode, str | None]] = [([q], "query", None) for q in QUERIES[:6]]
    results = asyncio.run(run_batched(batcher, calls))
    assert rec.batches == [1] * 6 and len(forwards) == 6
    for (texts, _, _), got in zip(calls, results, strict=True):
        np.testing.assert_allclose(got["dense"], encoder.encode_queries(texts, None), atol=1e-6)


def test_requests_are_never_split_across_batches(encoder: Any) -> None:
    rec = Recorder()
    batcher = MicroBatcher(encode_fn(encoder), max_batch=4, max_wait_s=0.5, on_batch=rec.batch)
    calls: list[tuple[list[str], Mode, str | None]] = [
        (QUERIES[0:3], "query", None),
        (QUERIES[3:6], "query", None),
        (QUERIES[6:12], "query", None),  # larger than max_batch: a batch of its own
        (QUERIES[12:13], "query", None),
    ]
    results = asyncio.run(run_batched(batcher, calls))
    assert all(size <= 4 or size == 6 for size in rec.batches)
    assert sum(rec.batches) == 13 and 6 in rec.batches
    for (texts, _, _), got in zip(calls, results, strict=True):
        assert got["dense"].shape[0] == len(texts)
        np.testing.assert_allclose(got["dense"], encoder.encode_queries(texts, None), atol=1e-5)


def test_an_encoder_error_reaches_its_callers_and_the_batcher_goes_on(encoder: Any) -> None:
    def flaky(texts: list[str], mode: Mode, instruction: str | None) -> dict[str, np.ndarray]:
        if any("boom" in t for t in texts):
            raise RuntimeError("forward failed")
        return {"dense": encoder.encode_queries(texts, instruction)}

    async def scenario() -> tuple[list[Any], dict[str, np.ndarray]]:
        batcher = MicroBatcher(flaky, max_batch=8, max_wait_s=0.5)
        await batcher.start()
        try:
            first = await asyncio.gather(
                batcher.encode(["boom"], "query", "x"),
                batcher.encode(["fine"], "query", "y"),
                return_exceptions=True,
            )
            after = await batcher.encode(["later"], "query", "x")
            return list(first), after
        finally:
            await batcher.stop()

    first, after = asyncio.run(scenario())
    assert isinstance(first[0], RuntimeError) and "forward failed" in str(first[0])
    assert isinstance(first[1], dict)  # another group of the same batch is unaffected
    np.testing.assert_allclose(after["dense"], encoder.encode_queries(["later"], "x"), atol=1e-5)


def test_stop_fails_waiting_requests_instead_of_hanging() -> None:
    gate = threading.Event()

    def slow(texts: list[str], mode: Mode, instruction: str | None) -> dict[str, np.ndarray]:
        gate.wait(30)
        return {"dense": np.ones((len(texts), 4), dtype=np.float32)}

    async def scenario() -> list[Any]:
        batcher = MicroBatcher(slow, max_batch=1, max_wait_s=0.0)
        await batcher.start()
        tasks = [asyncio.create_task(batcher.encode([f"t{i}"], "query", None)) for i in range(3)]
        while batcher.waiting < 3:
            await asyncio.sleep(0.001)
        stopping = asyncio.create_task(batcher.stop())
        await asyncio.sleep(0)
        gate.set()  # let the forward in progress finish so the worker thread can exit
        await stopping
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(scenario())
    assert all(isinstance(r, RuntimeError) for r in results)
    assert "shutting down" in str(results[-1])


def test_rejects_empty_input_and_bad_settings(encoder: Any) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(encode_fn(encoder), max_batch=0)

    async def empty() -> None:
        batcher = MicroBatcher(encode_fn(encoder))
        await batcher.start()
        try:
            await batcher.encode([], "query", None)
        finally:
            await batcher.stop()

    with pytest.raises(ValueError, match="nothing to encode"):
        asyncio.run(empty())

"""One forward at a time per encoder, queries first (encoders.forward_lock): a background (job)
thread's next forward waits for a waiting foreground one, and its forwards are smaller."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from encoders.forward_lock import ForwardLock, is_background, mark_background
from encoders.testing import tiny_encoder


def start(fn: Callable[[], None], background: bool) -> threading.Thread:
    def run() -> None:
        mark_background(background)
        fn()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_a_waiting_foreground_thread_goes_before_a_background_one() -> None:
    lock = ForwardLock()
    order: list[str] = []
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            holding.set()
            release.wait(10)

    def take(name: str) -> Callable[[], None]:
        def run() -> None:
            with lock:
                order.append(name)

        return run

    holder = start(hold, background=True)
    holding.wait(10)
    job = start(take("job"), background=True)  # asks first...
    query = start(take("query"), background=False)  # ...but a query is waiting too
    until(lambda: lock._foreground_waiting == 1)
    release.set()
    for thread in (holder, job, query):
        thread.join(10)
    assert order == ["query", "job"]
    assert not is_background()  # the mark is per thread


def test_background_encoding_is_the_same_vectors_in_smaller_forwards(tmp_path: Path) -> None:
    encoder = tiny_encoder(tmp_path / "m", token_budget=256)
    texts = [f"document {i} about " + "cells and genes " * (i % 5) for i in range(24)]
    sizes: dict[bool, list[int]] = {}
    vectors: dict[bool, np.ndarray] = {}

    def encode(background: bool) -> Callable[[], None]:
        def run() -> None:
            items = encoder.tokenize(texts, None, encoder.config.max_length)
            sizes[background] = [len(b) for b in encoder.batches(items)]
            vectors[background] = encoder.encode_documents(texts)

        return run

    for background in (False, True):
        start(encode(background), background).join(60)
    assert len(sizes[True]) > len(sizes[False]) and max(sizes[True]) < max(sizes[False])
    assert np.abs(vectors[True] - vectors[False]).max() < 1e-5

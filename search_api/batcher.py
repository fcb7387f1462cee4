"""Micro-batching: concurrent encode requests share one encoder forward.

Each request puts ``(texts, mode, instruction)`` on a queue and awaits a future. One collector
task takes the first waiting request, keeps taking more until ``max_wait_s`` has passed or
``max_batch`` texts are gathered, then runs the encoder once per ``(mode, instruction)`` group on
a dedicated worker thread (the event loop never blocks on a forward). While a forward runs, new
requests queue up and form the next batch, so under load batches grow by themselves and at low
load a request waits at most ``max_wait_s``.

The encoder guarantees that a text's vector does not depend on its batch or neighbours, so a
batched vector equals the unbatched one. A request is never split across batches; one larger than
``max_batch`` forms a batch on its own.

``enabled=False`` turns batching off: every request calls the encoder on its own (still on a
worker thread), which is what the load benchmark compares against.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

log = logging.getLogger(__name__)

Mode = Literal["query", "document"]
# (texts, mode, instruction) -> named float32 vectors, each [len(texts), dim]: queries get the
# encoder's named vectors (``{"dense"}``, MoEE sum ``{"hs", "rw"}``), documents ``{"dense"}``
Named = dict[str, np.ndarray]
EncodeFn = Callable[[list[str], Mode, str | None], Named]
BatchObserver = Callable[[int, float], None]  # (texts in one encoder call, seconds)
DepthObserver = Callable[[int], None]  # requests waiting for a forward


@dataclass
class _Request:
    texts: list[str]
    mode: Mode
    instruction: str | None
    future: asyncio.Future[Named]
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    def __init__(
        self,
        encode: EncodeFn,
        *,
        enabled: bool = True,
        max_batch: int = 32,
        max_wait_s: float = 0.005,
        on_batch: BatchObserver | None = None,
        on_depth: DepthObserver | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self._encode = encode
        self.enabled = enabled
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._on_depth = on_depth
        self._queue: asyncio.Queue[_Request] | None = None
        self._task: asyncio.Task[None] | None = None
        # batched: one thread runs every forward, in order; unbatched: one thread per request
        # (the encoder's own lock serialises the forwards, as it would with several callers)
        self._executor = ThreadPoolExecutor(
            max_workers=1 if enabled else 8, thread_name_prefix="ember-encode"
        )
        self._waiting = 0
        self._inflight: list[_Request] = []

    # ---- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if self.enabled and self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._collect(), name="ember-micro-batcher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        pending = list(self._inflight)
        if self._queue is not None:
            while not self._queue.empty():
                pending.append(self._queue.get_nowait())
        for req in pending:
            if not req.future.done():
                req.future.set_exception(RuntimeError("the server is shutting down"))
        self._executor.shutdown(wait=True)

    @property
    def waiting(self) -> int:
        """Requests queued or being encoded."""
        return self._waiting

    # ---- public ---------------------------------------------------------------------------
    async def encode(
        self, texts: Sequence[str], mode: Mode = "query", instruction: str | None = None
    ) -> Named:
        """Named vectors for ``texts`` (each float32 ``[len(texts), dim]``), batched with other
        callers."""
        items = list(texts)
        if not items:
            raise ValueError("nothing to encode")
        loop = asyncio.get_running_loop()
        self._set_waiting(+1)
        try:
            if not self.enabled:
                return await loop.run_in_executor(
                    self._executor, self._run_one, items, mode, instruction
                )
            if self._task is None or self._queue is None:
                raise RuntimeError("micro-batcher is not started")
            future: asyncio.Future[Named] = loop.create_future()
            self._queue.put_nowait(_Request(items, mode, instruction, future))
            return await future
        finally:
            self._set_waiting(-1)

    # ---- internals ------------------------------------------------------------------------
    def _set_waiting(self, delta: int) -> None:
        self._waiting += delta
        if self._on_depth is not None:
            self._on_depth(self._waiting)

    def _run_one(self, texts: list[str], mode: Mode, instruction: str | None) -> Named:
        started = time.perf_counter()
        out = self._encode(texts, mode, instruction)
        if self._on_batch is not None:
            self._on_batch(len(texts), time.perf_counter() - started)
        return out

    async def _collect(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            batch = self._inflight = [first]
            size = len(first.texts)
            deadline = loop.time() + self.max_wait_s
            while size < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                if size + len(nxt.texts) > self.max_batch:
                    # never split a request: it opens the next batch instead
                    await self._run_batch(batch)
                    batch = self._inflight = [nxt]
                    size = len(nxt.texts)
                    deadline = loop.time() + self.max_wait_s
                    continue
                batch.append(nxt)
                size += len(nxt.texts)
            await self._run_batch(batch)
            self._inflight = []

    async def _run_batch(self, batch: list[_Request]) -> None:
        live = [r for r in batch if not r.future.done()]  # a cancelled caller is skipped
        if not live:
            return
        groups: dict[tuple[Mode, str | None], list[_Request]] = {}
        for req in live:
            groups.setdefault((req.mode, req.instruction), []).append(req)
        loop = asyncio.get_running_loop()
        for (mode, instruction), reqs in groups.items():
            texts = [t for r in reqs for t in r.texts]
            try:
                vectors = await loop.run_in_executor(
                    self._executor, self._run_one, texts, mode, instruction
                )
            except Exception as exc:
                log.exception("micro-batch encode failed (%d texts)", len(texts))
                for r in reqs:
                    if not r.future.done():
                        r.future.set_exception(exc)
                continue
            offset = 0
            for r in reqs:
                n = len(r.texts)
                if not r.future.done():
                    r.future.set_result({k: v[offset : offset + n] for k, v in vectors.items()})
                offset += n

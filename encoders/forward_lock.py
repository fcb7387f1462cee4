"""One forward at a time per encoder, foreground first.

An encoder's forwards are serialised (hooks such as MoEE's router capture keep per-forward
state on the model). The API shares its encoder between ``/search`` (foreground threads) and
in-process index jobs (a background thread, marked with :func:`mark_background`). The lock is
taken per forward, not per ``encode`` call, and a background thread takes it only when no
foreground thread is waiting, so a query waits for at most one document forward instead of a
whole job batch. Background forwards are also cut smaller (:data:`BACKGROUND_BUDGET_DIVISOR`),
which bounds that wait further; a text's vector never depends on its batch.

Under search load that never pauses, background forwards wait: that is the priority asked for.
"""

from __future__ import annotations

import threading
from types import TracebackType

BACKGROUND_BUDGET_DIVISOR = 8  # a background forward: at most token_budget / 8 padded tokens

_local = threading.local()


def mark_background(background: bool = True) -> None:
    """Mark the calling thread's forwards as background (they yield to foreground ones)."""
    _local.background = background


def is_background() -> bool:
    return bool(getattr(_local, "background", False))


class ForwardLock:
    """A non-reentrant lock where waiting foreground threads go before background ones."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._busy = False
        self._foreground_waiting = 0

    def acquire(self) -> None:
        with self._cond:
            if is_background():
                while self._busy or self._foreground_waiting:
                    self._cond.wait()
            else:
                self._foreground_waiting += 1
                try:
                    while self._busy:
                        self._cond.wait()
                finally:
                    self._foreground_waiting -= 1
            self._busy = True

    def release(self) -> None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()

    def __enter__(self) -> ForwardLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

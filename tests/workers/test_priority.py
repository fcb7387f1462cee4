"""In-process jobs run below search (workers.priority): the job thread's nice value and torch
threads are its own; the other threads (search) keep theirs."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from workers.client import job_executor
from workers.priority import MAX_NICE, lower_this_thread
from workers.settings import WorkerSettings

T = TypeVar("T")


def in_new_thread(fn: Callable[[], T]) -> T:
    out: list[T] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join()
    return out[0]


def thread_state() -> tuple[int, int]:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), torch.get_num_threads()


def test_only_the_job_thread_is_lowered() -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:

        def job() -> tuple[tuple[int, int | None], tuple[int, int]]:
            reported = lower_this_thread(3, 1)
            torch.ones(64, 64) @ torch.ones(64, 64)  # a forward on the lowered thread
            return reported, thread_state()

        reported, seen = in_new_thread(job)
        assert reported == seen == (min(base + 3, MAX_NICE), 1)
        assert in_new_thread(thread_state) == (base, 2)  # a search thread started later
        assert thread_state() == (base, 2)  # this one
        unset = in_new_thread(lambda: lower_this_thread(0, None))
        assert unset == (base, 2)  # unset: as many as the process
    finally:
        torch.set_num_threads(previous)


def test_background_jobs_run_on_the_lowered_thread(tmp_path: Path) -> None:
    settings = WorkerSettings(broker_url=None, data_dir=tmp_path)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    nice, threads = job_executor(settings).submit(thread_state).result(timeout=60)
    assert nice == min(base + settings.job_nice, MAX_NICE)
    assert threads == torch.get_num_threads()
    assert thread_state()[0] == base

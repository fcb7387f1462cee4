"""In-process jobs run below search: the API's job thread yields the encoder to queries, runs at
a lower OS priority and, optionally, with fewer torch threads than the threads answering
``/search``.

Embedded, the API process runs index jobs on one background thread (:mod:`workers.client`) with
the API's own encoder and store. The encoder runs one forward at a time, and it used to hold that
lock for a whole ``encode`` call: a query arriving during a job batch waited for every document
forward of the batch (the issue saw 9.3 s; bench/search_during_index.py measured a p50 of 6.5 s).
So the job thread, before it runs anything:

* marks itself background (:mod:`encoders.forward_lock`): the lock is taken per forward, a waiting
  query goes before the job's next forward, and the job's forwards are cut smaller, so a query
  waits for at most one small document forward;
* raises its own nice value by ``EMBER_JOB_NICE`` (Linux schedules threads, and
  ``setpriority(PRIO_PROCESS, <thread id>)`` changes one thread). The OpenMP workers its torch
  forwards start are created by this thread and inherit the value; the search threads keep theirs,
  so under contention the kernel gives them the cores first;
* with ``EMBER_JOB_TORCH_THREADS`` set, limits its own torch intra-op threads (default: as many as
  search; forwards never overlap, so fewer threads would only make the forward a query may wait
  for longer). OpenMP and MKL thread counts are per calling thread, but
  ``torch.set_num_threads`` also sets the process default that threads read on their first torch
  call, so the default is put back from a throwaway thread and other threads are unaffected.

Why not a child process (its own GIL, its whole process niced)? The embedded store is a folder
locked to one process, so a child could not write the build; and it would need its own copy of
the encoder (a second model in memory, loaded again per job) when the job must index with exactly
the encoder the API serves. With a broker, jobs already run in other processes (``ember worker``).

What this does not cover: the job thread still takes the GIL for its Python work (chunking, job
records) and the store's lock for each upsert, and a niced thread holding either runs slower when
other processes load the host. Both are held briefly per batch; torch forwards release the GIL.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

MAX_NICE = 19


def lower_this_thread(nice: int, torch_threads: int | None = None) -> tuple[int, int]:
    """Lower the calling thread: its forwards yield to other threads', its nice value goes up by
    ``nice`` (capped at 19) and, if given, it uses ``torch_threads`` intra-op threads. Returns
    (the thread's nice value, its torch threads); failures to renice are logged, not raised."""
    tid = threading.get_native_id()
    value = os.getpriority(os.PRIO_PROCESS, tid)
    if nice > 0:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(value + nice, MAX_NICE))
            value = os.getpriority(os.PRIO_PROCESS, tid)
        except OSError as exc:  # not Linux, or a sandbox refusing it: run at the same priority
            log.warning("could not lower the job thread's priority: %s", exc)
    from encoders.forward_lock import mark_background  # torch: kept out of the API's imports

    mark_background()  # its forwards yield to the queries' (one encoder, one forward at a time)
    return value, _limit_torch_threads(torch_threads)


def _limit_torch_threads(wanted: int | None) -> int:
    import torch  # a job thread encodes anyway; kept out of the API's import path

    default = torch.get_num_threads()  # this thread's first torch call: it reads the default
    if wanted is None or wanted == default:
        return default
    torch.set_num_threads(wanted)  # this thread's OpenMP/MKL count, and the process default...
    restore = threading.Thread(target=torch.set_num_threads, args=(default,), name="ember-threads")
    restore.start()  # ...which a throwaway thread puts back for every other thread
    restore.join()
    return int(torch.get_num_threads())

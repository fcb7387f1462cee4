"""Real services for the worker tests: a redis-server on a free loopback port and Celery worker
processes (``ember worker``), each killed at teardown even when the test fails.

The worker process owns its embedded Qdrant store (a folder locks to one process), so tests read
the store only after the worker has exited.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from indexer.store import QdrantClientStore
from tests.conftest import REPO

T = TypeVar("T")
REDIS_SERVER = shutil.which("redis-server")
WORKER_READY_TIMEOUT = 120.0  # cold torch import on a busy machine


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@dataclass
class RedisServer:
    """``redis-server`` on 127.0.0.1:``port``; ``aof`` turns on the append-only file (fsync on
    every write) so a restart on the same port keeps every queued message and job record."""

    folder: Path
    aof: bool = False
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER, "redis-server not installed (make system-deps)"
        self.folder.mkdir(parents=True, exist_ok=True)
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
            if self.aof
            else ["--appendonly", "no", "--save", ""]
        )
        log = (self.folder / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.folder), "--protected-mode", "no", *persistence],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_until(self.ping, 20, f"redis-server on port {self.port}")

    def ping(self) -> bool:
        import redis

        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited: {(self.folder / 'redis.log').read_text()}")
        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.5).ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        """Graceful stop (SIGTERM: redis fsyncs the AOF and exits)."""
        stop_process(self.proc)
        self.proc = None

    def restart(self, down_for: float = 1.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()


def _running(server: RedisServer) -> Iterator[RedisServer]:
    """``server`` started for the test and stopped after it."""
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from _running(RedisServer(tmp_path / "redis"))


@pytest.fixture
def redis_aof(tmp_path: Path) -> Iterator[RedisServer]:
    yield from _running(RedisServer(tmp_path / "redis-aof", aof=True))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[QdrantClientStore]:
    """An embedded store for the API's in-process jobs; the worker runtime and job stores the
    jobs opened are forgotten afterwards."""
    from workers import runtime, tasks

    s = QdrantClientStore(path=tmp_path / "qdrant")
    try:
        yield s
    finally:
        s.close()
        runtime.reset()
        tasks._job_stores.clear()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from encoders.testing import tiny_model_folder

    return tiny_model_folder(tmp_path_factory.mktemp("tiny-llama") / "model", "llama")


@dataclass
class Worker:
    """One ``ember worker`` process (solo pool) with its own environment and log file."""

    name: str
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log_offset: int = 0

    @property
    def nodename(self) -> str:
        return f"{self.name}@localhost"

    def start(self) -> None:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ember", "worker", "--name", self.nodename,
             "--loglevel", "INFO", "--without-mingle", "--without-gossip"],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_until(self.ready, WORKER_READY_TIMEOUT, f"worker {self.nodename} to be ready", 0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"worker exited with {self.proc.returncode}:\n{self.log()[-4000:]}"
            )
        return f"{self.nodename} ready." in self.log()[self._log_offset :]

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        """Warm shutdown; the embedded store is released when the process exits."""
        stop_process(self.proc, timeout=60)
        self.proc = None


@pytest.fixture
def worker_env(tmp_path: Path, tiny_model: Path) -> dict[str, str]:
    """Environment for worker processes (tests add EMBER_BROKER_URL)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBER_")}
    env.update(
        EMBER_ENCODER=str(tiny_model),
        EMBER_DATA_DIR=str(tmp_path / "worker-data"),
        # the job roots (workers.paths): the tests' corpora and training outputs live here
        EMBER_JOB_INPUT_DIR=str(tmp_path),
        EMBER_JOB_OUTPUT_DIR=str(tmp_path),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_VERBOSITY="error",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(REPO),
    )
    return env


@pytest.fixture
def spawn_worker(tmp_path: Path) -> Iterator[object]:
    """``spawn_worker(name, env)`` starts a worker and returns it; all are stopped at teardown."""
    started: list[Worker] = []

    def spawn(name: str, env: dict[str, str]) -> Worker:
        worker = Worker(name, dict(env), tmp_path / f"worker-{name}.log")
        started.append(worker)
        worker.start()
        return worker

    try:
        yield spawn
    finally:
        for worker in started:
            stop_process(worker.proc, timeout=30)

"""Loopback load on the search API: micro-batching on vs off, side by side.

Indexes the first ``--docs`` documents of SciFact-mini (``../shared/data``) once into an embedded
store, then for each mode starts ``ember serve`` as its own process on a free 127.0.0.1 port, waits
for ``/health``, and runs ``--clients`` concurrent httpx (async) clients that POST ``/search`` with
the SciFact-mini queries (task ``scifact``) for ``--duration`` seconds. Reports successful req/s,
latency p50/p95/p99, refused/failed requests, the server's RSS before and after the load, and the
encoder batch sizes from ``/metrics``; the host's 1-minute load average is recorded around each
run (the numbers mean little on a host whose cores are busy with other work). All traffic stays
on the loopback interface and stops by itself (time-bounded, and capped at ``--max-requests``).

A 429 (the server's concurrency limit, ``--max-concurrent``) is answered as a polite client would:
the client waits the response's ``Retry-After`` (plus up to 25 % jitter, so refused clients do not
come back in step) and sends the same request again, at most ``--max-retries`` times. The report
counts the retries and the requests given up, and its req/s is useful throughput (200s per
second). ``--ignore-retry-after`` restores the old client, which counted the 429 and went straight
on to its next request, for comparison.

    .venv/bin/python bench/api_load.py                         # smollm2, 20 s per mode, 32 clients
    .venv/bin/python bench/api_load.py --encoder minilm --clients 64
    .venv/bin/python bench/api_load.py --duration 5 --docs 16  # quick look
    .venv/bin/python bench/api_load.py --torch-threads 1       # servers with one intra-op thread
    .venv/bin/python bench/api_load.py --probe-threads         # forwards only: batch vs single
    .venv/bin/python bench/api_load.py --max-concurrent 8 --clients 32 [--ignore-retry-after]

The server inherits this process's environment (API keys off), so thread settings such as
``OMP_NUM_THREADS=1`` apply to it and are recorded in the JSON.

Prints a table and writes JSON to bench/out/api_load-<encoder>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import functools
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out"
SCIFACT_MINI = ROOT.parent / "shared" / "data" / "beir" / "scifact-mini"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def start_server(
    encoder: str, data_dir: Path, env_extra: Mapping[str, str], *extra_args: str
) -> tuple[Any, str]:
    """``ember serve`` on a free port (quiet, no API keys, ``env_extra`` on top, then
    ``extra_args``) and its URL, once /health answers; killed if that takes over 300 s."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env.update(TRANSFORMERS_VERBOSITY="error", EMBER_API_KEYS="[]", **env_extra)
    cmd = [
        sys.executable, "-m", "ember", "serve", "--port", str(port), "--log-level", "warning",
        "--encoder", encoder, "--data-dir", str(data_dir), *extra_args,
    ]  # fmt: skip
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while True:
        if server.poll() is not None:
            raise SystemExit(f"ember serve exited: {server.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return server, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.kill()
            raise SystemExit("ember serve did not become ready in 300 s")
        time.sleep(0.2)


def stop_server(server: Any, timeout: float) -> None:
    """SIGINT (a graceful shutdown), then kill after ``timeout`` seconds."""
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def read_jsonl(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    rows = []
    with path.open() as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
            if limit is not None and len(rows) >= limit:
                break
    return rows


def build_index(data_dir: Path, encoder_spec: str, docs: int, chunk_tokens: int) -> dict[str, Any]:
    from encoders import load_encoder
    from indexer.pipeline import index_corpus
    from indexer.settings import Settings
    from indexer.stores import open_store

    corpus = data_dir / "corpus.jsonl"
    rows = read_jsonl(SCIFACT_MINI / "corpus.jsonl", docs)
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    encoder = load_encoder(encoder_spec)
    with open_store(Settings(data_dir=data_dir)) as store:  # the store `ember serve` opens
        report = index_corpus(
            corpus, "default", encoder, store, chunk_tokens=chunk_tokens, overlap=16,
            progress=False,
        )  # fmt: skip
        backend = store.backend
    return {
        "documents": report.documents,
        "chunks": report.chunks,
        "seconds": round(report.seconds, 1),
        "store": backend,
    }


RETRY_JITTER = 0.25  # a retry waits Retry-After x (1 + U(0, RETRY_JITTER))
DEFAULT_RETRY_S = 1.0  # a 429 without a readable Retry-After


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float:
    """A 429's ``Retry-After`` in seconds: delta-seconds or an HTTP date; unreadable or absent
    -> :data:`DEFAULT_RETRY_S`; never negative."""
    raw = (headers.get("retry-after") or "").strip()
    if not raw:
        return DEFAULT_RETRY_S
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw).timestamp()
    except (TypeError, ValueError):
        return DEFAULT_RETRY_S
    return max(when - (time.time() if now is None else now), 0.0)


class Reply(Protocol):
    status_code: int
    headers: Mapping[str, str]


@dataclass
class Outcome:
    """One logical request: its last reply's status key, the retries it took, the seconds it
    spent waiting between them, and whether it gave up on a 429."""

    key: str
    retries: int = 0
    waited_s: float = 0.0
    gave_up: bool = False


async def send_with_retries(
    send: Callable[[], Awaitable[Reply]],
    *,
    honour_retry_after: bool = True,
    max_retries: int = 5,
    deadline: float | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    clock: Callable[[], float] = time.perf_counter,
    rng: random.Random | None = None,
) -> Outcome:
    """Send until the answer is not 429. On a 429 wait its Retry-After (plus jitter) and send
    again, at most ``max_retries`` times and never past ``deadline`` (``clock`` time); with
    ``honour_retry_after=False`` a 429 is returned at once (the old client)."""
    rng = rng or random.Random()
    outcome = Outcome("")
    while True:
        reply = await send()
        outcome.key = str(reply.status_code)
        if reply.status_code != 429 or not honour_retry_after:
            return outcome
        delay = retry_after_s(reply.headers) * (1.0 + rng.uniform(0.0, RETRY_JITTER))
        if outcome.retries >= max_retries or (deadline is not None and clock() + delay > deadline):
            outcome.gave_up = True
            return outcome
        await sleep(delay)
        outcome.retries += 1
        outcome.waited_s += delay


def metric_sum_count(text: str, name: str) -> tuple[float, float]:
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_sum "):
            total = float(line.split()[-1])
        elif line.startswith(f"{name}_count "):
            count = float(line.split()[-1])
    return total, count


async def load(
    url: str,
    queries: list[str],
    clients: int,
    duration: float,
    max_requests: int,
    top_k: int,
    *,
    honour_retry_after: bool = True,
    max_retries: int = 5,
) -> dict[str, Any]:
    """``clients`` concurrent clients for ``duration`` s. Latency is per logical request, from
    its first send to its 200 (retry waits included); ``statuses`` counts final answers."""
    import httpx

    latencies: list[float] = []
    statuses: dict[str, int] = {}
    refused = retries = gave_up = 0
    waited = 0.0
    sent = 0
    deadline = time.perf_counter() + duration
    rng = random.Random(0)

    async def post(http: httpx.AsyncClient, body: dict[str, Any]) -> Reply:
        nonlocal refused
        reply = await http.post("/search", json=body)
        refused += reply.status_code == 429
        return reply

    async def client(worker: int, http: httpx.AsyncClient) -> None:
        nonlocal sent, retries, gave_up, waited
        i = worker
        while time.perf_counter() < deadline and sent < max_requests:
            sent += 1
            body = {"query": queries[i % len(queries)], "task": "scifact", "top_k": top_k}
            i += clients

            started = time.perf_counter()
            try:
                outcome = await send_with_retries(
                    functools.partial(post, http, body), honour_retry_after=honour_retry_after,
                    max_retries=max_retries, deadline=deadline, rng=rng,
                )  # fmt: skip
                key = outcome.key
                retries += outcome.retries
                waited += outcome.waited_s
                gave_up += outcome.gave_up
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            elapsed = time.perf_counter() - started
            statuses[key] = statuses.get(key, 0) + 1
            if key == "200":
                latencies.append(elapsed)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
        await asyncio.gather(*(client(w, http) for w in range(clients)))
    wall = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000 if latencies else np.asarray([np.nan])
    return {
        "wall_s": round(wall, 2),
        "ok": len(latencies),
        "statuses": statuses,
        "req_per_s": round(len(latencies) / wall, 2),  # useful throughput: 200s only
        "honour_retry_after": honour_retry_after,
        "answers_429": refused,  # every 429 the server sent, retried or not
        "retries": retries,
        "gave_up": gave_up,
        "retry_wait_s": round(waited, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "mean_ms": round(float(ms.mean()), 1),
        "max_ms": round(float(ms.max()), 1),
    }


def run_mode(args: argparse.Namespace, data_dir: Path, batching: bool, queries: list[str]) -> Any:
    import httpx

    env = {
        "EMBER_API_MAX_CONCURRENT": str(args.max_concurrent or max(64, args.clients * 2)),
        "EMBER_API_BATCH_WAIT_MS": str(args.batch_wait_ms),
        "EMBER_API_MAX_BATCH": str(args.max_batch),
    }
    extra = ["--micro-batching" if batching else "--no-micro-batching"]
    if args.torch_threads:
        extra += ["--torch-threads", str(args.torch_threads)]
    server, url = start_server(args.encoder, data_dir, env, *extra)
    try:
        # a short warm-up round (not measured): first requests pay one-time costs
        asyncio.run(load(url, queries, min(4, args.clients), 2.0, 50, args.top_k))
        before_sum, before_count = metric_sum_count(
            httpx.get(f"{url}/metrics").text, "ember_encoder_batch_size"
        )
        rss_before = rss_mib(server.pid)
        load_before = os.getloadavg()[0]
        honour = not args.ignore_retry_after
        result = asyncio.run(
            load(url, queries, args.clients, args.duration, args.max_requests, args.top_k,
                 honour_retry_after=honour, max_retries=args.max_retries)
        )  # fmt: skip
        rss_after = rss_mib(server.pid)
        after_sum, after_count = metric_sum_count(
            httpx.get(f"{url}/metrics").text, "ember_encoder_batch_size"
        )
        encodes = after_count - before_count
        result.update(
            micro_batching=batching,
            rss_before_mib=round(rss_before, 1),
            rss_after_mib=round(rss_after, 1),
            encoder_calls=int(encodes),
            mean_batch=round((after_sum - before_sum) / encodes, 2) if encodes else None,
            load_avg_1m=[round(load_before, 2), round(os.getloadavg()[0], 2)],
        )
        return result
    finally:
        stop_server(server, timeout=60)


def _warm_query_encoder(encoder_spec: str, queries: list[str]) -> tuple[Any, str]:
    """The encoder loaded in this process and the SciFact instruction, after one warm-up call."""
    from encoders import load_encoder
    from encoders.instructions import TASKS

    encoder = load_encoder(encoder_spec)
    instruction = TASKS["scifact"]
    encoder.encode_queries(queries[:2], instruction)  # warm-up
    return encoder, instruction


def probe_threads(encoder_spec: str, queries: list[str], n: int = 32) -> list[dict[str, Any]]:
    """In-process forward timings, no server: ``n`` queries as one batch and one by one (8 of
    them), at 1 and 2 intra-op threads. Shows what batching and threads do on this host."""
    import torch

    encoder, instruction = _warm_query_encoder(encoder_spec, queries)
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        started = time.perf_counter()
        encoder.encode_queries(queries[:n], instruction)
        batch = time.perf_counter() - started
        started = time.perf_counter()
        for q in queries[:8]:
            encoder.encode_queries([q], instruction)
        single = (time.perf_counter() - started) / 8
        rows.append(
            {
                "threads": threads,
                f"batch_of_{n}_s": round(batch, 2),
                "batched_ms_per_query": round(batch / n * 1000, 1),
                "single_query_ms": round(single * 1000, 1),
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def bare_forward(
    encoder_spec: str, queries: list[str], threads: int | None, n: int
) -> dict[str, Any]:
    """In-process ``encode_queries`` of one query at a time (no server, no HTTP, no search):
    the floor a ``POST /search`` of the same query stands on."""
    import torch

    encoder, instruction = _warm_query_encoder(encoder_spec, queries)
    if threads:
        torch.set_num_threads(threads)
    times = []
    for q in (queries * (n // max(1, len(queries)) + 1))[:n]:
        started = time.perf_counter()
        encoder.encode_queries([q], instruction)
        times.append((time.perf_counter() - started) * 1000)
    del encoder
    return {
        "queries": n,
        "torch_threads": torch.get_num_threads(),
        "p50_ms": round(statistics.median(times), 1),
        "mean_ms": round(statistics.fmean(times), 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def load_options(
    description: str, *, encoder: str, clients: int, per: str, docs: str
) -> argparse.ArgumentParser:
    """A parser with the options of the loopback benchmarks (this one and
    ``search_during_index.py``): ``--encoder``, ``--clients`` concurrent clients for
    ``--duration`` s a ``per`` (mode, phase), ``--docs`` SciFact-mini documents indexed first
    (``docs``: what they are for), ``--top-k``."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--encoder", default=encoder, help="encoder preset or folder")
    p.add_argument("--clients", type=int, default=clients, help="concurrent clients")
    p.add_argument("--duration", type=float, default=20.0, help=f"seconds of load per {per}")
    p.add_argument("--docs", type=int, default=64, help=f"SciFact-mini documents {docs}")
    p.add_argument("--top-k", type=int, default=10)
    return p


def report_head(args: argparse.Namespace) -> dict[str, Any]:
    """The first fields of a loopback benchmark's JSON: its command and the shared options."""
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "encoder": args.encoder,
        "clients": args.clients,
        "duration_s": args.duration,
    }


def main() -> None:
    p = load_options(__doc__, encoder="smollm2", clients=32, per="mode", docs="to index")
    p.add_argument("--max-requests", type=int, default=100_000, help="cap per mode")
    p.add_argument("--chunk-tokens", type=int, default=128)
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--modes", default="on,off", help="micro-batching modes to run, in order")
    p.add_argument("--torch-threads", type=int, default=None, help="ember serve --torch-threads")
    p.add_argument(
        "--max-concurrent", type=int, default=None,
        help="the server's EMBER_API_MAX_CONCURRENT (default max(64, 2 x clients): no 429s)",
    )  # fmt: skip
    p.add_argument("--max-retries", type=int, default=5, help="retries of one request on 429")
    p.add_argument(
        "--ignore-retry-after", action="store_true",
        help="the old client: a 429 is counted and the next request sent at once, no retry",
    )  # fmt: skip
    p.add_argument(
        "--versus-forward", type=int, default=0, metavar="N",
        help="also time N bare in-process query forwards before and after the server runs "
        "(use with --clients 1: POST /search p50 vs the forward it wraps)",
    )  # fmt: skip
    p.add_argument(
        "--probe-threads", action="store_true",
        help="only time in-process forwards (batched vs single, 1 vs 2 threads); no server",
    )  # fmt: skip
    args = p.parse_args()
    if not SCIFACT_MINI.is_dir():
        raise SystemExit(f"SciFact-mini not found at {SCIFACT_MINI} (shared/ beside the repo)")
    queries = [q["text"] for q in read_jsonl(SCIFACT_MINI / "queries.jsonl")]
    if args.probe_threads:
        OUT.mkdir(parents=True, exist_ok=True)
        out = OUT / f"api_load-threads-{Path(args.encoder).name}.json"
        rows = probe_threads(args.encoder, queries)
        out.write_text(json.dumps({"encoder": args.encoder, "rows": rows}, indent=2) + "\n")
        print(f"wrote {out.relative_to(ROOT)}")
        return

    with tempfile.TemporaryDirectory(prefix="ember-api-load-") as tmp:
        data_dir = Path(tmp)
        print(f"indexing {args.docs} SciFact-mini docs with {args.encoder} ...", file=sys.stderr)
        index = build_index(data_dir, args.encoder, args.docs, args.chunk_tokens)
        rows = []
        forward = []
        if args.versus_forward:
            forward.append(
                bare_forward(args.encoder, queries, args.torch_threads, args.versus_forward)
            )
        for mode in args.modes.split(","):
            batching = {"on": True, "off": False}[mode.strip()]
            print(f"micro-batching {mode}: {args.clients} clients x {args.duration:g} s ...",
                  file=sys.stderr)  # fmt: skip
            rows.append(run_mode(args, data_dir, batching, queries))
        if args.versus_forward:
            forward.append(
                bare_forward(args.encoder, queries, args.torch_threads, args.versus_forward)
            )

    report = {
        **report_head(args),
        "batch_wait_ms": args.batch_wait_ms,
        "max_batch": args.max_batch,
        "torch_threads": args.torch_threads,
        "max_concurrent": args.max_concurrent,
        "honour_retry_after": not args.ignore_retry_after,
        "index": index,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        "results": rows,
        "bare_forward": forward,
    }  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    threads = f"-t{args.torch_threads}" if args.torch_threads else ""
    limit = f"-c{args.max_concurrent}" if args.max_concurrent else ""
    limit += "-noretry" if limit and args.ignore_retry_after else ""
    out = OUT / f"api_load-{Path(args.encoder).name}{threads}{limit}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")

    head = f"{'batching':>9} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
    head += f"{'ok':>6} {'other':>6} {'429s':>6} {'retry':>6} {'gave up':>7} "
    head += f"{'calls':>6} {'batch':>6} {'RSS MiB before/after':>21} load"
    print(head)
    for r in rows:
        other = sum(v for k, v in r["statuses"].items() if k != "200")
        print(
            f"{'on' if r['micro_batching'] else 'off':>9} {r['req_per_s']:>7.1f} "
            f"{r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['ok']:>6} "
            f"{other:>6} {r['answers_429']:>6} {r['retries']:>6} {r['gave_up']:>7} "
            f"{r['encoder_calls']:>6} {r['mean_batch'] or 0:>6.2f} "
            f"{r['rss_before_mib']:>10.0f} / {r['rss_after_mib']:<8.0f} "
            f"{r['load_avg_1m'][0]:.1f}-{r['load_avg_1m'][1]:.1f}"
        )
    if forward:
        floor = statistics.median([f["p50_ms"] for f in forward])
        print(f"bare forward p50 (before / after the server runs): "
              f"{' / '.join(str(f['p50_ms']) for f in forward)} ms")  # fmt: skip
        for r in rows:
            mode = "on" if r["micro_batching"] else "off"
            print(f"POST /search p50 / bare forward p50, micro-batching {mode}: "
                  f"{r['p50_ms'] / floor:.2f}x")  # fmt: skip
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

"""Slow clients against a real uvicorn server on loopback (``search_api.limits``): the API key is
checked before a concurrency slot is taken or the body is read, and a body that does not arrive
within ``api_body_timeout_s`` is refused (408), which frees its slot.

Each slow client is a raw socket that sends the headers of ``POST /search`` with
``Content-Length: 100`` and only part of the body, then hangs; a bounded number of them (twice
``api_max_concurrent``)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.search_api.conftest import LiveServer

KEY = "slow-key"
MAX_CONCURRENT = 4
SLOW_CLIENTS = 2 * MAX_CONCURRENT


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """Opened sockets, closed before the server stops (it waits for requests in flight)."""
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        with contextlib.suppress(OSError):
            sock.close()


def slow_post(server: LiveServer, opened: list[socket.socket], key: str | None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    opened.append(sock)
    head = ["POST /search HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
            "Content-Length: 100"]  # fmt: skip
    if key is not None:
        head.append(f"Authorization: Bearer {key}")
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + b'{"query": "fo')
    return sock


def status_of(sock: socket.socket) -> int:
    """The status of the response the server sends (the client never finishes its body)."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed without a response: {data!r}"
        data += chunk
    return int(data.split(b" ", 2)[1])


def authenticated_search(server: LiveServer) -> int:
    headers = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(f"{server.url}/search", json={"query": "fox"}, headers=headers, timeout=60)
    return r.status_code


def test_slow_bodies_without_a_key_hold_no_slot(
    live_server: Callable[..., LiveServer], sockets: list[socket.socket]
) -> None:
    # a body timeout far beyond the test: only the key check can answer these clients
    server = live_server(api_keys=[KEY], api_max_concurrent=MAX_CONCURRENT, api_body_timeout_s=600)
    slow = [slow_post(server, sockets, key=None) for _ in range(SLOW_CLIENTS)]
    wrong = slow_post(server, sockets, key="not-the-key")
    assert [status_of(s) for s in slow] == [401] * SLOW_CLIENTS
    assert status_of(wrong) == 403
    # they still hang (sockets open, bodies unfinished), yet every slot is free
    for _ in range(MAX_CONCURRENT + 1):
        assert authenticated_search(server) == 200


def test_slow_bodies_with_a_key_time_out_and_free_their_slots(
    live_server: Callable[..., LiveServer], sockets: list[socket.socket]
) -> None:
    server = live_server(api_keys=[KEY], api_max_concurrent=MAX_CONCURRENT, api_body_timeout_s=1)
    slow = [slow_post(server, sockets, key=KEY) for _ in range(SLOW_CLIENTS)]
    statuses = [status_of(s) for s in slow]
    # the first MAX_CONCURRENT took the slots and were cut off at the body timeout (408); the
    # others found no slot (429), or a slot already freed by a timeout (408)
    assert set(statuses) <= {408, 429} and statuses.count(408) >= MAX_CONCURRENT, statuses
    # the slow clients still hang, but hold nothing: a searcher gets through
    assert authenticated_search(server) == 200
    r = httpx.get(f"{server.url}/metrics", timeout=60)
    assert 'ember_http_rejected_total{reason="body_timeout"}' in r.text

"""Header-read and keep-alive timeouts of a real ``patron serve`` (serving/http_timeouts.py):
half-open and slow-header connections are closed, a prompt request is not."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.services import free_port, redis_env
from tests.serving.conftest import NS
from tests.serving.test_uvicorn import start_server, wait_ready

pytestmark = pytest.mark.redis
TIMEOUT_S = 1.0
PARTIAL = b"GET /healthz HTTP/1.1\r\nHost: t\r\n"


@pytest.fixture
def server(live_bundle: Path, published: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {
        "PATRON_BUNDLE": str(live_bundle),
        **redis_env(published),
        "PATRON_REDIS_NAMESPACE": NS,
        "PATRON_ENV": "dev",
        "PATRON_HEADER_TIMEOUT_S": str(TIMEOUT_S),
        "PATRON_KEEP_ALIVE_S": str(TIMEOUT_S),
    }
    proc = start_server(env, port)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, timeout=60)
        yield f"http://127.0.0.1:{port}", port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _closed_by_server(sock: socket.socket, within: float) -> float | None:
    """Seconds until the server closed the connection (None: still open after ``within``)."""
    t0 = time.monotonic()
    sock.settimeout(within)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return time.monotonic() - t0
    except TimeoutError:
        return None
    except ConnectionResetError:
        return time.monotonic() - t0


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def test_half_open_connections_are_closed_and_service_goes_on(server: tuple[str, int]) -> None:
    base, port = server
    held = [_connect(port) for _ in range(300)]
    for i, s in enumerate(held):
        if i % 2:
            s.sendall(PARTIAL)  # headers never completed; the other half sends nothing
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200  # meanwhile: served
    deadline = time.monotonic() + TIMEOUT_S * 4  # one deadline for all of them
    waits = [_closed_by_server(s, max(0.01, deadline - time.monotonic())) for s in held]
    for s in held:
        s.close()
    assert None not in waits, f"{waits.count(None)} of 300 connections still open"
    assert max(w for w in waits if w is not None) < TIMEOUT_S * 4


def test_dripping_headers_do_not_reset_the_timer(server: tuple[str, int]) -> None:
    _, port = server
    s = _connect(port)
    s.sendall(b"GET /healthz HTTP/1.1\r\n")
    t0 = time.monotonic()
    closed = False
    while time.monotonic() - t0 < TIMEOUT_S * 4:
        try:
            s.sendall(b"X-Drip: 1\r\n")
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        time.sleep(0.2)
    s.close()
    assert closed, "a slowloris client kept its connection past the header timeout"
    assert time.monotonic() - t0 < TIMEOUT_S * 4


def test_a_prompt_request_and_an_idle_keep_alive(server: tuple[str, int]) -> None:
    _, port = server
    s = _connect(port)
    s.sendall(PARTIAL)
    time.sleep(TIMEOUT_S / 3)  # headers in two pieces, within the timeout: answered
    s.sendall(b"\r\n")
    s.settimeout(5)
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    # the connection then idles: the keep-alive timeout closes it
    waited = _closed_by_server(s, TIMEOUT_S * 4)
    s.close()
    assert waited is not None and waited >= TIMEOUT_S * 0.8
    # the next request's headers on a kept-alive connection are timed too
    s = _connect(port)
    s.sendall(PARTIAL + b"\r\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    s.sendall(PARTIAL)
    assert _closed_by_server(s, TIMEOUT_S * 4) is not None
    s.close()

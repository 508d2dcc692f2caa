"""``patron serve --workers 2`` (serving/workers.py) against a real redis-server: connections
spread over both workers, a dead worker is replaced, SIGTERM stops everything, a taken port
is a clear error."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.services import free_port, redis_env
from tests.serving.conftest import NS
from tests.serving.test_uvicorn import start_server, wait_ready


def _serve(bundle: Path, redis_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        "PATRON_BUNDLE": str(bundle),
        **redis_env(redis_url),
        "PATRON_REDIS_NAMESPACE": NS,
        "PATRON_ENV": "dev",
    }
    return start_server(env, port, workers=2)


def _workers(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The worker processes (multiprocessing also starts a resource tracker)."""
    out = []
    for c in psutil.Process(proc.pid).children():
        try:
            if c.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(
                c.cmdline()
            ):
                out.append(c)
        except psutil.NoSuchProcess:
            continue
    return out


def _established(worker: psutil.Process, port: int) -> int:
    return sum(
        1
        for c in worker.net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
    )


def _wait_workers(proc: subprocess.Popen[bytes], n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(_workers(proc)) != n:
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.1)


@pytest.mark.slow
def test_two_workers_share_connections_and_survive_a_crash(
    shared_live_bundle: Path, shared_redis: str
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _serve(shared_live_bundle, shared_redis, port)
    clients: list[httpx.Client] = []
    try:
        wait_ready(base, proc, timeout=60)
        _wait_workers(proc, 2)
        workers = _workers(proc)
        for _ in range(20):  # wait until both workers answer /readyz
            if all(httpx.get(f"{base}/readyz", timeout=2).status_code == 200 for _ in range(4)):
                break
        # 32 keep-alive connections, as a storefront backend or wrk holds them: the kernel
        # hashes each to one worker's socket (a shared socket often gave one worker all 32)
        clients = [httpx.Client(base_url=base, timeout=10) for _ in range(32)]
        for c in clients:
            assert c.get("/v1/customers/c0001/recommendations?k=3").status_code == 200
        per_worker = [_established(w, port) for w in workers]
        assert sum(per_worker) == 32, per_worker
        assert min(per_worker) >= 4, per_worker  # P(< 4 of 32 by chance) ~ 1e-6
        for c in clients:
            c.close()
        # a worker that dies is replaced; the server keeps answering meanwhile
        victim = workers[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        deadline = time.monotonic() + 60
        while True:
            now = _workers(proc)
            if len(now) == 2 and victim.pid not in {w.pid for w in now}:
                break
            assert time.monotonic() < deadline, "dead worker was not replaced"
            assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
            time.sleep(0.2)
        wait_ready(base, proc, timeout=60)
        # SIGTERM: every worker stops, then the supervisor, with exit code 0
        survivors = _workers(proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        for w in survivors:
            assert not w.is_running() or w.status() == psutil.STATUS_ZOMBIE
    finally:
        for c in clients:
            c.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_taken_port_is_a_clear_error(shared_live_bundle: Path, shared_redis: str) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        proc = _serve(shared_live_bundle, shared_redis, port)
        assert proc.wait(60) == 2
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
        assert f"cannot listen on 127.0.0.1:{port}" in err, err
    finally:
        holder.close()

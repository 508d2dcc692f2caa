"""``patron serve --workers N`` (N > 1): N uvicorn workers, each on its own SO_REUSEPORT socket.

uvicorn's own multi-worker mode shares one listening socket: whichever worker wakes first
accepts, and with keep-alive clients (storefront backends, load generators) one worker can
end up holding nearly every connection while the other idles. Measured here with 2 workers
and 32 wrk connections: all 32 on one worker in 3 runs of 6, and /healthz throughput halved in
those runs. With one SO_REUSEPORT listening socket per worker the kernel hashes each new
connection to one of them, so connections (and load) spread evenly
(tests/serving/test_workers.py).

The supervisor here is deliberately small: it starts the workers, forwards SIGINT/SIGTERM
(each worker shuts down gracefully: in-flight requests finish), restarts a worker that dies
while serving, and stops everything when a worker fails to start (a bad bundle or setting
would fail the same way on every restart; the orchestrator reports it). Linux and the BSDs
have SO_REUSEPORT; elsewhere ``patron serve`` keeps uvicorn's shared socket.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import time
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

log = logging.getLogger("uvicorn.error")

APP = "serving.app:create_app"
STARTUP_FAILURE = 3  # uvicorn's exit code for a worker that could not start
SUPPORTED = hasattr(socket, "SO_REUSEPORT")


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) with SO_REUSEPORT (not yet listening)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def uvicorn_options(host: str, port: int, log_level: str) -> dict[str, Any]:
    """How every worker runs the app: the factory, uvloop + httptools with header-read and
    keep-alive timeouts, no access log, log lines with time, level and logger
    (serving/logs.py; ``PATRON_LOG_FORMAT=json``)."""
    from serving.http_timeouts import HeaderTimeoutProtocol
    from serving.logs import log_config
    from serving.settings import get_serving_settings

    settings = get_serving_settings()
    return {
        "log_config": log_config(log_level, settings.log_format),
        "app": APP,
        "factory": True,
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": HeaderTimeoutProtocol,  # httptools, with a header-read timeout
        "timeout_keep_alive": settings.keep_alive_s,
        "log_level": log_level,
        "access_log": False,
        "lifespan": "on",
    }


def _worker(host: str, port: int, log_level: str) -> None:  # pragma: no cover (a child)
    """One worker process: its own socket, one uvicorn server."""
    import uvicorn

    config = uvicorn.Config(**uvicorn_options(host, port, log_level))
    try:
        sock = reuseport_socket(host, port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc)
        raise SystemExit(STARTUP_FAILURE) from None
    uvicorn.Server(config).run(sockets=[sock])


def run_workers(host: str, port: int, workers: int, log_level: str) -> int:
    """Serve with ``workers`` processes until SIGINT/SIGTERM; the exit code to return.

    Raises OSError when (host, port) cannot be bound (in use, no such address).
    """
    reuseport_socket(host, port).close()  # fail fast, in the parent, on a taken port
    ctx = multiprocessing.get_context("spawn")
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def start() -> BaseProcess:
        p = ctx.Process(target=_worker, args=(host, port, log_level), name="patron-worker")
        p.start()
        return p

    procs = [start() for _ in range(workers)]
    log.info("started %d workers on %s:%d (SO_REUSEPORT)", workers, host, port)
    code = 0
    restarts: list[float] = []  # when workers were replaced, for the crash-loop guard
    try:
        while not stopping:
            time.sleep(0.2)
            for i, p in enumerate(procs):
                if p.is_alive() or stopping:
                    continue
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < 60] + [now]
                if p.exitcode == STARTUP_FAILURE or len(restarts) > 2 * workers:
                    why = "failed to start" if p.exitcode == STARTUP_FAILURE else "keep dying"
                    log.error(
                        "worker [%s] exited with %s: workers %s; stopping", p.pid, p.exitcode, why
                    )
                    stopping.append(0)
                    code = STARTUP_FAILURE if p.exitcode == STARTUP_FAILURE else 1
                    break
                log.warning("worker [%s] exited with %s; starting another", p.pid, p.exitcode)
                procs[i] = start()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: uvicorn finishes in-flight requests, then exits
        deadline = time.monotonic() + 30
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                log.warning("worker [%s] did not stop in time; killing it", p.pid)
                p.kill()
                p.join()
        for s, handler in previous.items():
            signal.signal(s, handler)
    log.info("stopped %d workers", workers)
    return code

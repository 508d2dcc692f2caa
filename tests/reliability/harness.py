"""Reliability harness: the published customer table, a Redis stop that keeps its data,
a real ``patron serve`` process with its log captured to a file, and a bounded,
steady-rate load generator over loopback that records every outcome."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import redis

from tests.services import RedisServer, free_port, redis_env
from tests.serving.helpers import customer_id

ROOT = Path(__file__).resolve().parents[2]
N_CUSTOMERS = 300  # the customers of tests.serving.helpers.make_bundle
TIERS = ("bronze", "silver", "gold", "platinum")


def customers_table() -> pl.DataFrame:
    """Tiers cycle silver/gold/platinum so a known customer is never the default 'bronze'."""
    ids = [customer_id(u) for u in range(N_CUSTOMERS)]
    return pl.DataFrame(
        {
            "customer_id": ids,
            "tier": [TIERS[1 + u % 3] for u in range(N_CUSTOMERS)],
            "segment": [f"seg{u % 4}" for u in range(N_CUSTOMERS)],
            "churn_risk": [round(u / N_CUSTOMERS, 3) for u in range(N_CUSTOMERS)],
            "clv_band": ["mid"] * N_CUSTOMERS,
            "loyalty_index": [float(u % 100) for u in range(N_CUSTOMERS)],
            "marketing_consent": [u % 2 == 0 for u in range(N_CUSTOMERS)],
            "next_tier": [TIERS[min(3, 2 + u % 3)] for u in range(N_CUSTOMERS)],
            "progress_to_next": [100.0 + u for u in range(N_CUSTOMERS)],
            "typical_spend": [20.0] * N_CUSTOMERS,
        }
    )


def stop_redis(srv: RedisServer) -> None:
    """Stop redis-server the way a restart of a persistent instance does (SHUTDOWN SAVE):
    the data comes back with it, so what is measured is the API, not Redis durability."""
    c = redis.Redis.from_url(srv.url)
    c.shutdown(save=True)
    c.close()
    assert srv.proc is not None
    srv.proc.wait(10)
    srv.proc = None


@dataclass
class Server:
    """A running ``patron serve``; ``log`` is its captured stderr."""

    base: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def server_env(bundle: Path, redis_url: str, namespace: str, **extra: str) -> dict[str, str]:
    """The settings of a test server on a local bundle with the admin key (``extra``: more
    ``PATRON_*`` variables)."""
    from tests.serving.conftest import ADMIN_KEY

    return {
        "PATRON_BUNDLE": str(bundle),
        **redis_env(redis_url),
        "PATRON_REDIS_NAMESPACE": namespace,
        "PATRON_ADMIN_API_KEY": ADMIN_KEY,
        "PATRON_ENV": "test",
        **extra,
    }


def spawn(
    env_extra: dict[str, str], log_path: Path, workers: int = 1
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OPENBLAS_NUM_THREADS": "1",
        "PATRON_LOG_LEVEL": "INFO",
        **env_extra,
    }
    with log_path.open("ab") as log:
        cmd = [sys.executable, "-m", "patron", "serve", "--port", str(port)]
        proc = subprocess.Popen(
            [*cmd, "--workers", str(workers)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(base: str, proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 45):
    """Wait for /readyz 200; fail with the server's log if it dies or never gets ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}:\n{log_path.read_text()}")
        try:
            r = httpx.get(f"{base}/readyz", timeout=2)
            if r.status_code == 200:
                return r.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server not ready in {timeout}s:\n{log_path.read_text()}")


@contextmanager
def serve(env_extra: dict[str, str], log_path: Path, workers: int = 1) -> Iterator[Server]:
    proc, base = spawn(env_extra, log_path, workers)
    try:
        wait_ready(base, proc, log_path)
        yield Server(base, proc, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# --------------------------------------------------------------------------- load
@dataclass(frozen=True)
class Call:
    """One request of the load: method, path, optional JSON body, and a tag for analysis."""

    method: str
    path: str
    json: Any = None
    tag: str = ""
    content: bytes | None = None  # a raw body instead of ``json`` (e.g. not valid JSON)
    headers: dict[str, str] | None = None


def is_degraded(body: Any) -> bool:
    """A degraded answer (a batch is degraded when any of its results is)."""
    if not isinstance(body, dict):
        return False
    if body.get("degraded") is True:
        return True
    return any(r.get("degraded") is True for r in body.get("results") or [] if isinstance(r, dict))


@dataclass(frozen=True)
class Outcome:
    call: Call
    sent: float  # monotonic
    done: float
    status: int  # 0 = transport error (connection refused, timeout)
    body: Any
    error: str | None = None

    @property
    def klass(self) -> str:
        """The outcome class counted in the summary table."""
        if self.status == 0:
            return "error"
        if self.status == 503:
            return "503"  # documented "unavailable, retry later" (events/profile, Redis down)
        if self.status >= 500:
            return "5xx"
        if self.status >= 400:
            return "4xx"
        return "2xx-degraded" if is_degraded(self.body) else "2xx"


@dataclass
class LoadResult:
    outcomes: list[Outcome] = field(default_factory=list)
    started: float = 0.0

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(o.klass for o in self.outcomes).items()))


class SteadyLoad:
    """Send ``rate`` requests/s for ``seconds`` (open loop: request i is due at t0 + i/rate)
    from a bounded pool of threads, each with its own keep-alive client. The number of
    requests is fixed (rate * seconds) and every request has a timeout, so it always ends."""

    def __init__(
        self,
        base: str,
        make_call: Callable[[int], Call],
        rate: float,
        seconds: float,
        threads: int = 8,
        timeout: float = 5.0,
    ) -> None:
        self.base = base
        self.make_call = make_call
        self.rate = rate
        self.n = int(rate * seconds)
        self.threads = threads
        self.timeout = timeout
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._thread: threading.Thread | None = None

    def _client(self) -> httpx.Client:
        c = getattr(self._local, "client", None)
        if c is None:
            c = httpx.Client(base_url=self.base, timeout=self.timeout)
            self._local.client = c
            with self._lock:
                self._clients.append(c)
        return c

    def _one(self, i: int) -> None:
        due = self.result.started + i / self.rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        call = self.make_call(i)
        sent = time.monotonic()
        try:
            r = self._client().request(
                call.method,
                call.path,
                json=call.json if call.content is None else None,
                content=call.content,
                headers=call.headers,
            )
            try:
                body = r.json()
            except ValueError:
                body = r.text
            out = Outcome(call, sent, time.monotonic(), r.status_code, body)
        except httpx.HTTPError as exc:
            out = Outcome(call, sent, time.monotonic(), 0, None, f"{type(exc).__name__}: {exc}")
        with self._lock:
            self.result.outcomes.append(out)

    def run(self) -> LoadResult:
        """Blocking: run the whole load and return the outcomes."""
        self._clients: list[httpx.Client] = []
        self.result.started = time.monotonic()
        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(self._one, range(self.n)))
        for c in self._clients:
            c.close()
        self.result.outcomes.sort(key=lambda o: o.sent)
        return self.result

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        while self.result.started == 0.0:
            time.sleep(0.001)

    def join(self) -> LoadResult:
        assert self._thread is not None
        self._thread.join(self.rate and self.n / self.rate + 60)
        assert not self._thread.is_alive(), "load generator did not finish"
        return self.result

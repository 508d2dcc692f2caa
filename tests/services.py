"""Start or find the real services tests need (redis-server, PostgreSQL-backed MLflow).

Without ``PATRON_REQUIRE_SERVICES=1`` a missing service skips the tests that need it; with it
(set by .ci/run) a missing service fails them, so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REQUIRE = os.environ.get("PATRON_REQUIRE_SERVICES", "") == "1"


def missing(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"{reason} (PATRON_REQUIRE_SERVICES=1 turns this skip into a failure)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_cluster_port() -> int:
    """A free port below 55536 whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = random.randint(20_000, 45_000)
        try:
            for p in (port, port + 10_000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def wait_port(port: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@dataclass
class RedisServer:
    """A private redis-server on a free loopback port; stop()/start() inject outages."""

    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    extra: list[str] = field(default_factory=list)  # more redis-server options

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            missing("redis-server is not on PATH (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [
                str(exe),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait_port(self.port):
            self.stop()
            missing(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None


@contextmanager
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(port=free_port(), workdir=workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def postgres_dsn() -> str | None:
    """A PostgreSQL URL from PATRON_TEST_POSTGRES_URL, or the local default when reachable."""
    url = os.environ.get("PATRON_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        import psycopg2

        psycopg2.connect(url, connect_timeout=3).close()
    except Exception:
        return None
    return url


CLUSTER_URLS: set[str] = set()  # URLs of the clusters tests started


def is_cluster_url(url: str) -> bool:
    return url in CLUSTER_URLS


def redis_client(url: str) -> Any:
    """A sync client for a test server: RedisCluster for a test cluster's URL."""
    from patron.redis_connect import connect

    return connect(url, is_cluster_url(url))


def redis_env(url: str) -> dict[str, str]:
    """The environment that points a patron process at this server or cluster."""
    return {"PATRON_REDIS_URL": url, "PATRON_REDIS_CLUSTER": "1" if is_cluster_url(url) else "0"}


def flush(url: str) -> None:
    """Empty a test server, or every primary of a test cluster."""
    client = redis_client(url)
    client.flushall()
    client.close()


@dataclass
class RedisClusterServers:
    """A real Redis Cluster on free loopback ports: ``masters`` primaries with one replica
    each, from ``redis-server --cluster-enabled yes`` processes joined by
    ``redis-cli --cluster create``. ``kill(port)`` injects a node failure."""

    workdir: Path
    masters: int = 3
    node_timeout_ms: int = 2_000
    nodes: dict[int, RedisServer] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{next(iter(self.nodes))}/0"

    def start(self) -> None:
        exe, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if exe is None or cli is None:
            missing("redis-server/redis-cli are not on PATH (apt-get install redis-server)")
        for _ in range(self.masters * 2):
            port = free_cluster_port()
            node = RedisServer(port, self.workdir / str(port))
            node.workdir.mkdir(parents=True, exist_ok=True)
            node.extra = [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(node.workdir / "nodes.conf"),
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--repl-diskless-sync-delay", "0",  # replicas sync at once, not after 5 s
            ]  # fmt: skip
            node.start()
            self.nodes[port] = node
        nodes = [f"127.0.0.1:{p}" for p in self.nodes]
        create = subprocess.run(
            [str(cli), "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if create.returncode != 0:
            self.stop()
            pytest.fail(f"redis-cli --cluster create failed: {create.stdout[-800:]}")
        if not self.wait_ok(30.0) or not self.wait_replicas_synced(30.0):
            self.stop()
            pytest.fail("the test cluster did not reach cluster_state:ok with synced replicas")
        CLUSTER_URLS.add(self.url)

    def info(self, port: int, what: str = "cluster info") -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(port), *what.split()], capture_output=True, text=True, timeout=5
        )
        return out.stdout

    def wait_ok(self, timeout: float) -> bool:
        """Every running node reports cluster_state:ok and knows every slot."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [self.info(p) for p, n in self.nodes.items() if n.proc is not None]
            if all("cluster_state:ok" in s and "cluster_slots_ok:16384" in s for s in states):
                return True
            time.sleep(0.1)
        return False

    def wait_replicas_synced(self, timeout: float) -> bool:
        """Every running replica's link to its primary is up (its first sync is done: before
        that, WAIT on the primary counts no replica)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            roles = [self.info(p, "info replication") for p, n in self.nodes.items() if n.proc]
            replicas = [r for r in roles if "role:slave" in r]
            if replicas and all("master_link_status:up" in r for r in replicas):
                return True
            time.sleep(0.1)
        return False

    def primaries(self) -> list[int]:
        """Ports of the running nodes that are masters now."""
        return [
            p
            for p, n in self.nodes.items()
            if n.proc is not None and "role:master" in self.info(p, "info replication")
        ]

    def replica_of(self, port: int) -> int:
        """The port of the running replica that follows the primary on ``port``."""
        for p, n in self.nodes.items():
            if n.proc is not None and f"master_port:{port}" in self.info(p, "info replication"):
                return p
        raise AssertionError(f"no replica follows {port}")

    def wait_promoted(self, port: int, timeout: float) -> bool:
        """The node on ``port`` (a replica) is a primary now and the cluster is ok."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "role:master" in self.info(port, "info replication") and self.wait_ok(0.05):
                return True
            time.sleep(0.05)
        return False

    def kill(self, port: int) -> None:
        proc = self.nodes[port].proc
        if proc is not None:
            proc.kill()
            proc.wait(5)
            self.nodes[port].proc = None

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()


@contextmanager
def redis_cluster(workdir: Path, masters: int = 3) -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(workdir, masters)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()

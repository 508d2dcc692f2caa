"""The embedded default speaks the Redis protocol well enough for the demo (pipelines, Lua)."""

from __future__ import annotations

import subprocess
import sys

import redis

from tests.services import free_port, wait_port


def test_embedded_server_answers_pipelines_and_scripts() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "patron", "embedded-redis", "--port", str(port)],
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_port(port), "embedded server did not start"
        client = redis.Redis(port=port)
        pipe = client.pipeline()
        pipe.set("k", "v")
        pipe.get("k")
        assert pipe.execute() == [True, b"v"]
        assert client.eval("return redis.call('GET', KEYS[1])", 1, "k") == b"v"
        # an error reply (unknown script) must keep the connection, as a real Redis does
        no_retry = redis.Redis(port=port, retry=None)
        no_retry.ping()
        try:
            no_retry.evalsha("0" * 40, 0)
            raise AssertionError("EVALSHA of an unknown script succeeded")
        except redis.exceptions.NoScriptError:
            pass
        assert no_retry.ping() is True
        assert no_retry.connection_pool._created_connections == 1  # same connection reused
    finally:
        proc.terminate()
        proc.wait(10)

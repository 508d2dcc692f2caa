"""Admin changes reach every worker of ``patron serve --workers 2`` and a second, separate
server process (another replica) with the default sync interval, and survive restarts: real
processes, a real redis-server. Prints the measured convergence times (docs/serving.md)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import yaml

from patron.bundle import write_bundle
from serving.rules.loader import DEFAULT_RULES_FILE
from tests.services import free_port, redis_env
from tests.serving.conftest import ADMIN_KEY, NS
from tests.serving.helpers import make_bundle_data
from tests.serving.test_uvicorn import start_server, wait_ready

pytestmark = [pytest.mark.redis, pytest.mark.slow]
KEY = {"X-API-Key": ADMIN_KEY}
BOUND_S = 1.0 + 0.5  # PATRON_ADMIN_SYNC_S (default 1 s) + time to apply (a small bundle)


def _serve(bundle: Path, redis_url: str, workers: int) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    env = {
        "PATRON_BUNDLE": str(bundle),
        **redis_env(redis_url),
        "PATRON_REDIS_NAMESPACE": NS,
        "PATRON_ADMIN_API_KEY": ADMIN_KEY,
        "PATRON_RULES_FILE": str(DEFAULT_RULES_FILE),
    }
    return f"http://127.0.0.1:{port}", start_server(env, port, workers=workers)


def _views(bases: list[str], n: int = 8) -> dict[str, dict[str, object]]:
    """/admin/state by worker, over ``n`` fresh connections per server (each new connection
    is hashed to one worker's socket)."""
    seen: dict[str, dict[str, object]] = {}
    for base in bases:
        for _ in range(n):
            s = httpx.get(f"{base}/admin/state", headers=KEY, timeout=5).json()
            seen[s["worker"]] = s
    return seen


def _lag(bases: list[str], want: tuple[str, str], workers: int) -> float:
    """Seconds from the latest change to the last worker's adoption, once every worker
    serves ``want`` (rules version, champion version)."""
    t0 = time.monotonic()
    while True:
        views = _views(bases)
        got = {(str(v["rules_version"]), str(v["champion_version"])) for v in views.values()}
        if len(views) == workers and got == {want}:
            break
        assert time.monotonic() - t0 < 15, views
        time.sleep(0.05)
    change = datetime.fromisoformat(str(next(iter(views.values()))["changes"][0]["at"]))  # type: ignore[index]
    adopted = max(datetime.fromisoformat(str(v["adopted_at"])) for v in views.values())
    return (adopted - change).total_seconds()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def test_rules_and_reloads_reach_every_worker_and_replica(
    live_bundle: Path, published: str
) -> None:
    (a, pa), (b, pb) = _serve(live_bundle, published, 2), _serve(live_bundle, published, 1)
    try:
        wait_ready(a, pa, timeout=90)
        wait_ready(b, pb, timeout=90)
        first = next(iter(_views([b]).values()))
        _lag([a, b], (str(first["rules_version"]), "1"), 3)  # all three workers are up

        rules = {**yaml.safe_load(DEFAULT_RULES_FILE.read_text()), "version": "everywhere"}
        res = httpx.put(f"{a}/admin/rules", json=rules, headers=KEY, timeout=10)
        assert res.status_code == 200, res.text
        rules_version = res.json()["version"]
        rules_s = _lag([a, b], (rules_version, "1"), 3)

        write_bundle(make_bundle_data(seed=1, version="2"), live_bundle)
        res = httpx.post(f"{b}/admin/reload", headers=KEY, timeout=30)
        assert res.json()["champion_version"] == "2", res.text
        model_s = _lag([a, b], (rules_version, "2"), 3)
        print(
            f"\nadmin change adopted by all 3 workers after: rules {rules_s:.3f} s, "
            f"model {model_s:.3f} s"
        )
        assert 0 <= rules_s < BOUND_S and 0 <= model_s < BOUND_S

        # what the admin reads agrees too, on every connection to either server
        seen: dict[str, set[str]] = {}
        for base in (a, b):
            for _ in range(12):
                rules_text = httpx.get(f"{base}/admin/rules", headers=KEY, timeout=5).text
                seen.setdefault("/admin/rules, byte for byte", set()).add(rules_text)
                rules_now = json.loads(rules_text)
                model_now = httpx.get(f"{base}/v1/model", timeout=5).json()["champion"]
                del model_now["loaded_at"]  # when this worker loaded it
                for k, v in [
                    *rules_now.items(),
                    *(("model." + k, v) for k, v in model_now.items()),
                ]:
                    seen.setdefault(k, set()).add(json.dumps(v, sort_keys=True))
        assert {k: v for k, v in seen.items() if len(v) > 1} == {}

        _stop(pb)  # a restarted replica serves the shared rules and the pinned model
        b, pb = _serve(live_bundle, published, 1)
        wait_ready(b, pb, timeout=90)
        restarted = next(iter(_views([b]).values()))
        assert (restarted["rules_version"], restarted["champion_version"]) == (rules_version, "2")
    finally:
        _stop(pa)
        _stop(pb)

"""A simulated shop against a real server: customers buy a recommended item with a known,
variant-specific probability; `patron ab report` must recover the planted lift at the
traffic it says it needs, and call a zero lift not decidable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.services import free_port, redis_client, redis_env
from tests.serving.conftest import ADMIN_KEY, CUSTOMERS
from tests.serving.helpers import customer_id, customers_frame, items_frame, sync_store
from tests.serving.test_uvicorn import ROOT, start_server, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.single_node]
BASE_RATE = 0.5  # champion: an answer leads to a purchase with this probability
PRICE = 10.0


def _env(redis_url: str, namespace: str) -> dict[str, str]:
    return {**redis_env(redis_url), "PATRON_REDIS_NAMESPACE": namespace}


@pytest.fixture
def shop_server(
    bundle_dir: Path, bundle2_dir: Path, redis_url: str, request: pytest.FixtureRequest
) -> Iterator[tuple[str, dict[str, str]]]:
    """A server splitting traffic between bundle 1 (champion) and 2 (challenger)."""
    namespace = f"abshop{request.node.name[-12:].replace('[', '').replace(']', '')}"
    client = redis_client(redis_url)
    sync_store(client, namespace).publish(customers_frame(CUSTOMERS), items_frame(240))
    client.close()
    env = _env(redis_url, namespace)
    port = free_port()
    proc = start_server(
        {
            **env,
            "PATRON_BUNDLE": str(bundle_dir),
            "PATRON_CHALLENGER_BUNDLE": str(bundle2_dir),
            "PATRON_CHALLENGER_TRAFFIC": "0.5",
            "PATRON_ADMIN_API_KEY": ADMIN_KEY,
            "PATRON_ENV": "test",
            "PATRON_REDIS_TIMEOUT_MS": "1000",
            "PATRON_AB_FLUSH_MS": "5",
        },
        port,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield base, env
    finally:
        proc.terminate()
        proc.wait(10)


class Shop:
    """Customers asking for picks and buying one of them with their variant's probability."""

    def __init__(self, base: str, rates: dict[str, float], seed: int) -> None:
        self.http = httpx.Client(base_url=base, timeout=10)
        self.rates = rates
        self.rng = np.random.default_rng(seed)
        self.answers = {"champion": 0, "challenger": 0}
        self.customers = [customer_id(u) for u in range(300)]
        self.turn = 0

    def visit(self, until_each: int) -> None:
        """Serve until both variants have ``until_each`` answers."""
        events: list[dict[str, Any]] = []
        while min(self.answers.values()) < until_each:
            cid = self.customers[self.turn % len(self.customers)]
            self.turn += 1
            res = self.http.get(f"/v1/customers/{cid}/recommendations", params={"k": 4})
            assert res.status_code == 200, res.text
            a = res.json()
            self.answers[a["variant"]] += 1
            now = datetime.now(UTC).isoformat()
            rec = a["recommendation_id"]
            events.append(
                {"customer_id": cid, "type": "impression", "ts": now, "recommendation_id": rec}
            )
            if a["items"] and self.rng.random() < self.rates[a["variant"]]:
                item = a["items"][int(self.rng.integers(len(a["items"])))]["item_id"]
                events.append(
                    {
                        "customer_id": cid,
                        "item_id": item,
                        "ts": now,
                        "unit_price": PRICE,
                        "event_id": f"order-{self.turn}",
                        "recommendation_id": rec,
                    }
                )
            if len(events) >= 900:
                self._send(events)
                events = []
        self._send(events)

    def _send(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        time.sleep(0.05)  # the answers' records are written every 5 ms
        res = self.http.post("/v1/events", json={"events": events})
        assert res.status_code == 200, res.text
        assert res.json()["attributed"] == len(events)


def _report(env: dict[str, str], *extra: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "patron", "ab", "report", "--power", "0.95", *extra],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert any(line.startswith("verdict: ") for line in lines)  # the table, then JSON
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def _show(case: str, pilot: dict[str, Any], report: dict[str, Any]) -> None:
    """The figures of a run (pytest -s prints them; the closing notes quote them)."""
    conv, va = report["tests"]["conversion"], report["variants"]
    print(
        json.dumps(
            {
                "case": case,
                "needed_per_variant": pilot["power"]["needed_per_variant"],
                "answers": [va["champion"]["answers"], va["challenger"]["answers"]],
                "conversion": [va["champion"]["conversion"], va["challenger"]["conversion"]],
                "diff": conv["diff"],
                "ci": [conv["ci_low"], conv["ci_high"]],
                "p": conv["p_value"],
                "verdict": report["verdict"],
            }
        )
    )


def test_planted_lift_is_detected_at_the_traffic_the_report_asks_for(
    shop_server: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    base, env = shop_server
    shop = Shop(base, {"champion": BASE_RATE, "challenger": BASE_RATE * 1.10}, seed=7)
    shop.visit(until_each=600)  # a pilot: the champion's rate and the traffic it needs
    pilot = _report(env)
    assert pilot["experiment"] == "1~2"
    needed = pilot["power"]["needed_per_variant"]
    assert needed is not None and 1_500 < needed < 5_000
    shop.visit(until_each=needed)
    report = _report(env, "--png", str(tmp_path / "ab.png"))
    champ, chall = report["variants"]["champion"], report["variants"]["challenger"]
    assert (champ["answers"], chall["answers"]) == (
        shop.answers["champion"],
        shop.answers["challenger"],
    )
    assert champ["impressions"] == champ["answers"] and chall["impressions"] == chall["answers"]
    conv = report["tests"]["conversion"]
    planted = BASE_RATE * 0.10
    assert conv["ci_low"] <= planted <= conv["ci_high"], conv
    assert report["verdict"] == "challenger better", report["why"]
    assert chall["revenue"] == pytest.approx(PRICE * chall["converted"])
    assert report["tests"]["revenue_per_answer"]["diff"] > 0
    assert (tmp_path / "ab.png").stat().st_size > 1_000
    _show("planted +10%", pilot, report)


def test_zero_lift_is_not_decidable(shop_server: tuple[str, dict[str, str]]) -> None:
    base, env = shop_server
    shop = Shop(base, {"champion": BASE_RATE, "challenger": BASE_RATE}, seed=8)
    shop.visit(until_each=600)
    needed = _report(env)["power"]["needed_per_variant"]
    shop.visit(until_each=needed)
    report = _report(env)
    _show("no lift", {"power": {"needed_per_variant": needed}}, report)
    assert report["verdict"] == "not yet decidable", report["why"]
    conv = report["tests"]["conversion"]
    assert conv["ci_low"] <= 0 <= conv["ci_high"]

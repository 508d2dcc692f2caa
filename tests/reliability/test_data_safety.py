"""Data safety of the online store: readers never see a mix of two feature versions while
versions are published, and a ``patron features publish`` killed half-way leaves the
previous version current and intact."""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import redis

from features.online import OnlineStore, pack_customers
from features.online_layout import bucket_count
from tests.reliability.conftest import Report
from tests.reliability.harness import ROOT, serve
from tests.serving.conftest import ADMIN_KEY
from tests.serving.helpers import customer_id, items_frame, make_bundle

pytestmark = pytest.mark.reliability

NS = "relsafe"
# Two versions that differ in every field, so any mix (fields of one version decoded with
# the other's codebook, or customers of one batch from different versions) is visible.
LABELS: dict[str, dict[str, Any]] = {
    "A": {
        "tier": "silver",
        "segment": "segA",
        "clv_band": "bandA",
        "loyalty_index": 11.0,
        "churn_risk": 0.111,
        "progress_to_next": 111.0,
    },
    "B": {
        "tier": "gold",
        "segment": "segB",
        "clv_band": "bandB",
        "loyalty_index": 22.0,
        "churn_risk": 0.222,
        "progress_to_next": 222.0,
    },
}


def version_table(label: str, ids: list[str]) -> pl.DataFrame:
    v = LABELS[label]
    n = len(ids)
    return pl.DataFrame(
        {
            "customer_id": ids,
            **{k: [val] * n for k, val in v.items()},
            "next_tier": ["platinum"] * n,
            "marketing_consent": [label == "A"] * n,
        }
    )


def label_of(fields: dict[str, Any]) -> str:
    """Which version a record comes from; 'MIXED' when its fields disagree."""
    for name, v in LABELS.items():
        if all(fields.get(k) == v[k] for k in ("tier", "segment", "clv_band", "loyalty_index")):
            return name
    return "MIXED"


def by_tier_segment(rec: dict[str, Any]) -> str:
    """The version of a recommendation answer (it carries tier and segment only)."""
    for name, v in LABELS.items():
        if (rec["tier"], rec["segment"]) == (v["tier"], v["segment"]):
            return name
    return "MIXED"


def test_readers_never_see_a_mixed_version(tmp_path: Path, redis_url: str, report: Report) -> None:
    ids = [customer_id(u) for u in range(300)]  # the bundle's customers
    client = redis.Redis.from_url(redis_url)
    store = OnlineStore(client, NS)
    version_label: dict[str, str] = {
        store.publish(version_table("A", ids), items_frame(240)).version: "A"
    }
    env = {
        "PATRON_BUNDLE": str(make_bundle(tmp_path / "bundle", seed=0, version="1")),
        "PATRON_REDIS_URL": redis_url,
        "PATRON_REDIS_NAMESPACE": NS,
        "PATRON_ADMIN_API_KEY": ADMIN_KEY,
        "PATRON_ENV": "test",
        # generous: this scenario is about consistency, not latency (CI machines are busy)
        "PATRON_REDIS_TIMEOUT_MS": "2000",
    }
    seen: list[tuple[str, str, str | None]] = []  # (reader, label, features_version)
    failures: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def api_reader(base: str, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=base, timeout=10) as c:
            while not stop.is_set():
                cid = rng.choice(ids)
                p = c.get(f"/v1/customers/{cid}/profile")
                b = c.post(
                    "/v1/recommendations/batch", json={"customer_ids": rng.sample(ids, 25), "k": 3}
                )
                with lock:
                    if p.status_code != 200 or b.status_code != 200:
                        failures.append(f"{p.status_code} {b.status_code} {p.text} {b.text}")
                        continue
                    body = p.json()
                    seen.append(("profile", label_of(body), body["features_version"]))
                    if label_of(body) == "MIXED":
                        failures.append(f"profile {body}")
                    # one batch = one round trip: every customer from the same version
                    labels = {by_tier_segment(r) for r in b.json()["results"]}
                    if len(labels) != 1:
                        failures.append(
                            "batch " + str([(r["tier"], r["segment"]) for r in b.json()["results"]])
                        )
                    seen.append(("batch", labels.pop() if len(labels) == 1 else "MIXED", None))

    def store_reader() -> None:
        own = OnlineStore(redis.Redis.from_url(redis_url), NS)
        while not stop.is_set():
            rows = own.read_customers(random.sample(ids, 100))
            labels = {label_of(vars(r)) for r in rows}
            versions = {r.version for r in rows}
            with lock:
                ok = len(labels) == 1 and len(versions) == 1
                if not ok:
                    failures.append(f"store {labels} {versions}")
                seen.append(("store", labels.pop() if ok else "MIXED", versions.pop()))

    publishes = 0
    with serve(env, tmp_path / "server.log") as server:
        threads = [threading.Thread(target=api_reader, args=(server.base, s)) for s in range(2)]
        threads.append(threading.Thread(target=store_reader))
        for t in threads:
            t.start()
        try:
            for label in itertools.islice(itertools.cycle("BA"), 16):
                rep = store.publish(version_table(label, ids), items_frame(240))
                version_label[rep.version] = label
                publishes += 1
                time.sleep(0.15)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        log = server.log()
    client.close()
    assert failures == [], log[-2000:]
    counts = Counter(label for _, label, _ in seen)
    assert counts["MIXED"] == 0, counts
    assert counts["A"] > 10 and counts["B"] > 10, counts  # both versions were really read
    # the version a reader reported is the version its values came from
    wrong = [(r, lab, v) for r, lab, v in seen if v is not None and version_label.get(v) != lab]
    assert wrong == []
    report(
        "data safety: publish while reading",
        len(seen),
        {"consistent": len(seen) - counts["MIXED"], "mixed": counts["MIXED"]},
        f"{publishes} publishes of alternating versions",
        counts["MIXED"],
        notes=f"reads by version A={counts['A']} B={counts['B']} (profile, batch, store)",
    )


N_CRASH = 120_000  # 3,072 buckets: 4 pipeline chunks, so a kill after the first is mid-way


def publish_cmd(features: Path, redis_url: str) -> list[str]:
    return [
        sys.executable, "-m", "patron", "features", "publish",
        "--features", str(features), "--redis-url", redis_url, "--namespace", NS,
    ]  # fmt: skip


def test_killed_publish_leaves_previous_version_intact(
    tmp_path: Path, redis_url: str, report: Report
) -> None:
    ids = [f"k{u:07d}" for u in range(N_CRASH)]
    old, new = version_table("A", ids), version_table("B", ids)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    client = redis.Redis.from_url(redis_url)
    store = OnlineStore(client, NS)
    for name, table in (("old", old), ("new", new)):
        (tmp_path / name).mkdir()
        table.write_parquet(tmp_path / name / "customers.parquet")
    done = subprocess.run(
        publish_cmd(tmp_path / "old", redis_url), env=env, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()
    old_version = store.current_version()
    assert old_version is not None
    keys_before = client.dbsize()

    proc = subprocess.Popen(
        publish_cmd(tmp_path / "new", redis_url),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 90
    try:
        while client.dbsize() == keys_before:  # kill as soon as the new version's keys appear
            assert proc.poll() is None, "publish ended before it wrote anything"
            assert time.monotonic() < deadline, "publish never started writing"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL

    # the pointer did not move and the new version never became readable
    assert store.current_version() == old_version, "publish finished before the kill: raise N"
    partial = [
        k.decode()
        for k in client.scan_iter(f"{NS}:*v:*", count=10_000)
        if f":v:{old_version}:" not in k.decode()
    ]
    assert 0 < len(partial) < bucket_count(N_CRASH), len(partial)  # killed mid-way, really
    # every customer is readable with the old values, through the reader the API uses
    got: list[tuple[str, str | None, str | None, float | None]] = []
    for i in range(0, N_CRASH, 5_000):
        got += [
            (r.customer_id, r.tier, r.segment, r.loyalty_index)
            if r.known
            else (r.customer_id, None, None, None)
            for r in store.read_customers(ids[i : i + 5_000], recent_k=1)
        ]
    frame = pl.DataFrame(
        got, schema=["customer_id", "tier", "segment", "loyalty_index"], orient="row"
    )
    lost = frame.join(
        old.select("customer_id", "tier", "segment", "loyalty_index"),
        on=["customer_id", "tier", "segment", "loyalty_index"],
        how="anti",
    ).height
    # ... and byte for byte what the old publish wrote
    packed, _ = pack_customers(old)
    buckets = int(client.hget(store.keys.meta(old_version), "buckets") or 0)
    pipe = client.pipeline(transaction=False)
    for b in range(buckets):
        pipe.hgetall(store.keys.bucket(old_version, b))
    stored = pl.DataFrame(
        [(k.decode(), v.decode()) for h in pipe.execute() for k, v in h.items()],
        schema=["customer_id", "packed"],
        orient="row",
    )
    assert lost == 0 and frame.height == N_CRASH
    assert stored.sort("customer_id").equals(packed.sort("customer_id"))

    # the next publish succeeds and flips to the new values
    again = subprocess.run(
        publish_cmd(tmp_path / "new", redis_url), env=env, capture_output=True, timeout=120
    )
    assert again.returncode == 0, again.stderr.decode()
    assert store.current_version() not in (None, old_version)
    assert label_of(vars(store.read_customer(ids[-1]))) == "B"
    orphans = sum(1 for k in partial if client.ttl(k) == -1)
    client.close()
    report(
        "data safety: publish SIGKILLed mid-way",
        N_CRASH,
        {"old-values-read": N_CRASH - lost, "lost": lost},
        f"SIGKILL after {len(partial)}/{bucket_count(N_CRASH)} new buckets written",
        lost,
        notes=f"previous version stayed current; {orphans} orphaned partial keys have no TTL",
    )


def test_publish_accepts_a_table_with_only_some_feature_columns(redis_url: str) -> None:
    """Regression: a customers table missing two or more optional feature columns made
    ``pack_customers`` fail (unnamed null literals clashed); missing ones are now null."""
    client = redis.Redis.from_url(redis_url)
    store = OnlineStore(client, NS)
    store.publish(pl.DataFrame({"customer_id": ["a", "b"], "tier": ["gold", None]}), pl.DataFrame())
    a, b = store.read_customers(["a", "b"])
    client.close()
    assert (a.known, a.tier, a.segment, a.loyalty_index, a.marketing_consent) == (
        True,
        "gold",
        None,
        None,
        False,
    )
    assert b.known and b.tier is None

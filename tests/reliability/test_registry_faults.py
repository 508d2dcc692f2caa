"""Model lifecycle faults against ``patron serve`` on a real MLflow store (SQLite):
hot swap under load, corrupt bundles refused, registry unreachable at start-up."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import httpx
import pytest
import redis

from features.online import OnlineStore
from serving.registry_client import RegistryClient
from tests.reliability.conftest import Report
from tests.reliability.harness import Call, Server, SteadyLoad, customers_table, serve, spawn
from tests.services import free_port
from tests.serving.conftest import ADMIN_KEY
from tests.serving.helpers import customer_id, items_frame, make_bundle
from tests.serving.test_registry import NAME, register

pytestmark = pytest.mark.reliability

NS = "relreg"


def rec_call(i: int) -> Call:
    return Call("GET", f"/v1/customers/{customer_id((i * 11) % 300)}/recommendations?k=5")


def server_env(redis_url: str, cache: Path, tracking_uri: str) -> dict[str, str]:
    return {
        "PATRON_MLFLOW_TRACKING_URI": tracking_uri,
        "PATRON_MODEL_NAME": NAME,
        "PATRON_BUNDLE_CACHE_DIR": str(cache),
        "PATRON_REDIS_URL": redis_url,
        "PATRON_REDIS_NAMESPACE": NS,
        "PATRON_ADMIN_API_KEY": ADMIN_KEY,
        "PATRON_ENV": "test",
        "PATRON_REDIS_TIMEOUT_MS": "250",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "2",
    }


@pytest.fixture
def features(redis_url: str) -> str:
    client = redis.Redis.from_url(redis_url)
    OnlineStore(client, NS).publish(customers_table(), items_frame(240))
    client.close()
    return redis_url


def promote(uri: str, version: str, workdir: Path) -> None:
    """``patron models promote`` path: gate with --force (the test runs carry no eval data)."""
    from mlflow.tracking import MlflowClient

    from training.registry import promote as gate_promote

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run_id = client.get_model_version(NAME, version).run_id
    client.log_metric(run_id, "val_coverage", 0.5)
    out = gate_promote(
        uri, NAME, version=version, force=True, reason="reliability", workdir=workdir
    )
    assert out["promoted"] is True and out["champion"] == version


def reload(server: Server) -> httpx.Response:
    return httpx.post(f"{server.base}/admin/reload", headers={"X-API-Key": ADMIN_KEY}, timeout=60)


def corrupt_bundles(tmp_path: Path) -> tuple[Path, Path]:
    """v2: one byte of the item factors changed after the manifest was written;
    v3: a file the manifest lists is missing."""
    bad_sum = make_bundle(tmp_path / "b2", seed=1, version="t2")
    f = bad_sum / "item_factors.npy"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    missing = make_bundle(tmp_path / "b3", seed=2, version="t3")
    (missing / "user_factors.npy").unlink()
    return bad_sum, missing


def test_corrupt_bundles_refused_then_hot_swap_under_load(
    mlflow_uri: str, tmp_path: Path, features: str, report: Report
) -> None:
    """One server (start-up is the slow part): two corrupt champions are refused while
    version 1 keeps serving, then a good version 4 is promoted and swapped in under load."""
    register(mlflow_uri, make_bundle(tmp_path / "b1", seed=0, version="t1"), tmp_path)
    bad_sum, missing = corrupt_bundles(tmp_path)
    good = make_bundle(tmp_path / "b4", seed=3, version="t4")
    cache = tmp_path / "cache"
    env = server_env(features, cache, mlflow_uri)
    with serve(env, tmp_path / "server.log") as server:
        # --- corrupt bundles under load
        load = SteadyLoad(server.base, rec_call, rate=40, seconds=6, threads=6)
        load.start()
        time.sleep(1)
        refused = []
        for bundle in (bad_sum, missing):
            version = register(mlflow_uri, bundle, tmp_path)  # alias champion -> new version
            r = reload(server)
            refused.append((version, r.status_code, r.json()["detail"]))
        corrupt_res = load.join()
        corrupt_model = httpx.get(f"{server.base}/v1/model").json()
        log = server.log()
        # --- hot swap under load: version 4 registered as challenger, promoted, reloaded
        register(mlflow_uri, good, tmp_path, "challenger")
        load = SteadyLoad(server.base, rec_call, rate=60, seconds=8, threads=8)
        load.start()
        time.sleep(2.5)
        promote(mlflow_uri, "4", tmp_path / "promote")
        r = reload(server)
        reloaded = time.monotonic()
        swap_res = load.join()
        model = httpx.get(f"{server.base}/v1/model").json()

    # corrupt: refused with a clear message and an ERROR log line; v1 served throughout
    assert [(v, code) for v, code, _ in refused] == [("2", 409), ("3", 409)]
    assert "checksum mismatch for item_factors.npy" in refused[0][2]
    assert "file user_factors.npy is missing" in refused[1][2]
    log_lines = [line for line in log.splitlines() if "reload refused" in line]
    assert len(log_lines) == 2, log
    assert "ERROR" in log_lines[0] and "checksum mismatch for item_factors.npy" in log_lines[0]
    assert "still serving version 1" in log_lines[0]
    assert "file user_factors.npy is missing" in log_lines[1]
    assert corrupt_model["champion"]["version"] == "1"
    assert not (cache / NAME / "v2").exists() and not (cache / NAME / "v3").exists()
    outs = corrupt_res.outcomes
    assert [(o.status, o.error) for o in outs if o.status != 200] == []
    assert {o.body["model_version"] for o in outs} == {"1"}
    report(
        "corrupt bundle: bad checksum, missing file",
        len(outs),
        corrupt_res.counts(),
        "2 bad versions made champion + reload",
        0,
        notes="both refused (409) with an ERROR log line; version 1 kept serving",
    )

    # hot swap: no failed request, one version per answer, a single switch 1 -> 4
    assert r.status_code == 200, r.text
    assert r.json()["previous_version"] == "1" and r.json()["champion_version"] == "4"
    assert model["champion"]["version"] == "4"
    outs = swap_res.outcomes
    assert [(o.status, o.error) for o in outs if o.status != 200] == []
    versions = [o.body["model_version"] for o in outs]
    assert set(versions) == {"1", "4"}  # each response names exactly one of the two
    first_new = min(o.done for o in outs if o.body["model_version"] == "4")
    # monotone: once a v4 answer came back, no request sent afterwards got v1
    assert [o for o in outs if o.sent > first_new and o.body["model_version"] == "1"] == []
    assert [o for o in outs if o.sent > reloaded and o.body["model_version"] != "4"] == []
    switches = sum(a != b for a, b in itertools.pairwise(versions))
    report(
        "hot swap: promote + /admin/reload under load",
        len(outs),
        swap_res.counts(),
        "champion alias moved 1->4, reload",
        0,
        notes=f"versions by send time switch {switches}x; 0 failed",
    )


def test_registry_unreachable_at_start_serves_cached_bundle(
    mlflow_uri: str, tmp_path: Path, features: str, report: Report
) -> None:
    register(mlflow_uri, make_bundle(tmp_path / "b1", seed=0, version="t1"), tmp_path)
    cache = tmp_path / "cache"
    # what a previous start left behind: the alias resolved and its bundle cached, verified
    RegistryClient(mlflow_uri, NAME, cache).fetch("champion")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    with serve(server_env(features, cache, dead), tmp_path / "outage.log") as server:
        ready = httpx.get(f"{server.base}/readyz")
        load = SteadyLoad(server.base, rec_call, rate=40, seconds=4, threads=4)
        res = load.run()
        log = server.log()
    assert ready.status_code == 200
    assert ready.json()["reasons"] == ["registry unreachable; serving cached bundle version 1"]
    assert "registry unreachable; serving cached bundle version 1" in log
    outs = res.outcomes
    assert [(o.status, o.error) for o in outs if o.status != 200] == []
    assert {o.body["model_version"] for o in outs} == {"1"}

    # no cache and no registry: refuses to start and says why (never serves nothing silently)
    proc, _ = spawn(server_env(features, tmp_path / "empty", dead), tmp_path / "nocache.log")
    code = proc.wait(90)
    nocache = (tmp_path / "nocache.log").read_text()
    assert code != 0 and "no cached bundle" in nocache
    report(
        "registry outage at start-up",
        len(outs),
        res.counts(),
        "MLflow tracking URI refused (closed port)",
        0,
        notes="cached v1 served, /readyz 200 with the reason; no cache -> exit "
        f"{code} with 'no cached bundle'",
    )

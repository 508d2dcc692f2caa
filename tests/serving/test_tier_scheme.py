"""One tier scheme end to end: tiers named member < insider < vip travel in the bundle, rank
min_tier eligibility and popular lists, and are checked against the rules' tiers at load."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml
from fastapi.testclient import TestClient

from patron.bundle import write_bundle
from serving.app import create_app
from tests.services import redis_client
from tests.serving.conftest import ADMIN_KEY
from tests.serving.helpers import (
    customer_id,
    customers_frame,
    items_frame,
    make_bundle_data,
    sync_store,
)
from tests.serving.test_api import ids

pytestmark = pytest.mark.redis

TIERS = ["member", "insider", "vip"]
VIP_ONLY = set(range(0, 240, 17))  # items with min_tier "vip"


def _bundle(path: Path) -> Path:
    data = make_bundle_data(seed=2)
    data.manifest.tiers = list(TIERS)
    data.catalog = data.catalog.with_columns(
        pl.Series("min_tier", ["vip" if j in VIP_ONLY else None for j in range(240)])
    )
    pop = data.popularity
    data.popularity = pl.concat(
        [
            pop.filter(pl.col("scope") != "tier"),
            *(
                pop.filter((pl.col("scope") == "tier") & (pl.col("key") == old)).with_columns(
                    pl.lit(new).alias("key")
                )
                for old, new in zip(("bronze", "silver", "gold"), TIERS, strict=True)
            ),
        ]
    )
    write_bundle(data, path)
    return path


def _rules(path: Path, tiers: list[str]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "version": "tiers-test",
                "tiers": tiers,
                "eligibility": {"enforce_min_tier": True, "exclusive_reason": "{min_tier} only"},
                "boosts": [
                    {
                        "name": "insiders_first",
                        "when": {"tier_at_least": "insider"},
                        "item": {"exclusive": True},
                        "multiply": 1.5,
                    }
                ],
            }
        )
    )
    return path


@pytest.fixture
def published_tiers(redis_url: str) -> str:
    rows = [
        {"customer_id": customer_id(u), "tier": TIERS[u % 3], "segment": "regular"}
        for u in range(30)
    ]
    client = redis_client(redis_url)
    sync_store(client, "tiers").publish(customers_frame(rows), items_frame(240))
    client.close()
    return redis_url


def _app(bundle: Path, redis_url: str):  # type: ignore[no-untyped-def]
    from tests.serving.conftest import settings_for

    return create_app(settings_for(bundle, redis_url, redis_namespace="tiers"))


def test_custom_tiers_end_to_end(
    tmp_path: Path, published_tiers: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = _bundle(tmp_path / "b")
    monkeypatch.setenv("PATRON_RULES_FILE", str(_rules(tmp_path / "r.yaml", TIERS)))
    with TestClient(_app(bundle, published_tiers)) as client:
        vip_only = {f"i{j:04d}" for j in VIP_ONLY}
        saw_vip_item = False
        for u in range(30):
            body = client.get(f"/v1/customers/{customer_id(u)}/recommendations").json()
            assert body["tier"] == TIERS[u % 3]
            got = set(ids(body))
            if TIERS[u % 3] != "vip":
                assert not got & vip_only, u  # eligibility ranks by the bundle's tiers
            else:
                saw_vip_item |= bool(got & vip_only)
                for it in body["items"]:
                    if it["item_id"] in vip_only:
                        assert "vip only" in it["reasons"]
        assert saw_vip_item
        assert client.get("/v1/popular", params={"tier": "vip"}).json()["tier"] == "vip"
        bad = client.get("/v1/popular", params={"tier": "gold"})
        assert bad.status_code == 422 and "member" in bad.text
        # a rule set naming other tiers is refused with the reason, the old one kept
        other = {"version": "x", "tiers": ["bronze", "silver", "gold"]}
        res = client.put("/admin/rules", json=other, headers={"X-API-Key": ADMIN_KEY})
        assert res.status_code == 422 and "tiers" in res.text, res.text
        assert (
            client.get("/admin/rules", headers={"X-API-Key": ADMIN_KEY})
            .json()["version"]
            .startswith("tiers-test")
        )


def test_rules_with_other_tiers_refuse_to_start(
    tmp_path: Path, published_tiers: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = _bundle(tmp_path / "b")
    monkeypatch.setenv(
        "PATRON_RULES_FILE", str(_rules(tmp_path / "r.yaml", ["bronze", "silver", "gold"]))
    )
    with pytest.raises(Exception, match="tiers"), TestClient(_app(bundle, published_tiers)):
        pass

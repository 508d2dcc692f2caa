"""Tier rules: thresholds, grace period, downgrade policies, manual floor, monotonicity."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.tiers import DEFAULT_RULES, TierRules, assign_tiers, load_rules

AS_OF = datetime(2024, 6, 30, tzinfo=UTC)
NAMES = DEFAULT_RULES.names


def run(rows: list[dict[str, object]], rules: TierRules = DEFAULT_RULES) -> pl.DataFrame:
    schema = {
        "customer_id": pl.String,
        "spend_12m": pl.Float64,
        "previous_tier": pl.String,
        "previous_below_since": pl.Date,
        "tier_floor": pl.String,
    }
    df = pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema)
    return assign_tiers(df.lazy(), rules, AS_OF).collect()


def test_config_file_matches_defaults() -> None:
    root = Path(__file__).resolve().parents[2]
    assert load_rules(root / "config" / "tiers.yaml") == DEFAULT_RULES


@pytest.mark.parametrize(
    "body, msg",
    [
        ("tiers: []", "at least one tier"),
        ("tiers: [{name: a, threshold: 5}]", "threshold 0"),
        ("tiers: [{name: a, threshold: 0}, {name: b, threshold: 0}]", "increase"),
        ("downgrade: sometimes\ntiers: [{name: a, threshold: 0}]", "downgrade"),
        ("tiers: [", "invalid tier rules"),
    ],
)
def test_bad_rules_file(tmp_path: Path, body: str, msg: str) -> None:
    p = tmp_path / "t.yaml"
    p.write_text(body)
    with pytest.raises(ValueError, match=msg):
        load_rules(p)


def test_thresholds_and_progress() -> None:
    df = run(
        [
            {"customer_id": "a", "spend_12m": 0.0},
            {"customer_id": "b", "spend_12m": 249.99},
            {"customer_id": "c", "spend_12m": 250.0},
            {"customer_id": "d", "spend_12m": 800.0},
            {"customer_id": "e", "spend_12m": 5000.0},
        ]
    )
    assert df["tier"].to_list() == ["bronze", "bronze", "silver", "gold", "platinum"]
    assert df["next_tier"].to_list() == ["silver", "silver", "gold", "platinum", None]
    assert df["progress_to_next"].to_list() == pytest.approx([250.0, 0.01, 500.0, 1200.0, None])


def test_grace_period_then_one_tier_downgrade() -> None:
    recent = AS_OF.date() - timedelta(days=10)
    lapsed = AS_OF.date() - timedelta(days=200)
    df = run(
        [
            # first time below gold: kept for the grace period, the clock starts today
            {"customer_id": "a", "spend_12m": 0.0, "previous_tier": "gold"},
            # below since 10 days: still in grace
            {
                "customer_id": "b",
                "spend_12m": 0.0,
                "previous_tier": "gold",
                "previous_below_since": recent,
            },
            # grace over: one tier down, still below silver -> new grace period from today
            {
                "customer_id": "c",
                "spend_12m": 0.0,
                "previous_tier": "gold",
                "previous_below_since": lapsed,
            },
            # qualifies again: grace cleared
            {
                "customer_id": "d",
                "spend_12m": 900.0,
                "previous_tier": "gold",
                "previous_below_since": lapsed,
            },
            # upgrades are immediate
            {"customer_id": "e", "spend_12m": 2500.0, "previous_tier": "silver"},
        ]
    )
    assert df["tier"].to_list() == ["gold", "gold", "silver", "gold", "platinum"]
    assert df["tier_below_since"].to_list() == [AS_OF.date(), recent, AS_OF.date(), None, None]


def test_reevaluate_drops_to_qualified() -> None:
    rules = DEFAULT_RULES.model_copy(update={"downgrade": "reevaluate"})
    lapsed = date(2023, 1, 1)
    df = run(
        [
            {
                "customer_id": "a",
                "spend_12m": 10.0,
                "previous_tier": "platinum",
                "previous_below_since": lapsed,
            }
        ],
        rules,
    )
    assert df["tier"].to_list() == ["bronze"]
    assert df["tier_below_since"].to_list() == [None]


def test_manual_floor() -> None:
    df = run(
        [
            {"customer_id": "a", "spend_12m": 0.0, "tier_floor": "gold"},
            {"customer_id": "b", "spend_12m": 3000.0, "tier_floor": "silver"},
        ]
    )
    assert df["tier"].to_list() == ["gold", "platinum"]
    assert df["progress_to_next"][0] == 2000.0


def test_points_basis_uses_earn_rate_of_held_tier() -> None:
    rules = DEFAULT_RULES.model_copy(update={"basis": "points"})
    df = run(
        [
            {"customer_id": "a", "spend_12m": 200.0},  # bronze rate 1.0 -> 200 pts
            {"customer_id": "b", "spend_12m": 200.0, "previous_tier": "silver"},  # 250 pts
        ],
        rules,
    )
    assert df["tier"].to_list() == ["bronze", "silver"]
    assert df["progress_to_next"][0] == pytest.approx(50.0)  # spend still needed


tier_st = st.sampled_from([None, *NAMES])


@settings(max_examples=150, deadline=None)
@given(
    spend=st.floats(0, 10_000, allow_nan=False),
    extra=st.floats(0, 5_000, allow_nan=False),
    prev=tier_st,
    floor=tier_st,
    below_days=st.one_of(st.none(), st.integers(0, 400)),
    policy=st.sampled_from(["one_tier", "reevaluate"]),
    basis=st.sampled_from(["spend", "points"]),
)
def test_more_spend_never_lowers_tier(
    spend: float,
    extra: float,
    prev: str | None,
    floor: str | None,
    below_days: int | None,
    policy: str,
    basis: str,
) -> None:
    rules = DEFAULT_RULES.model_copy(update={"downgrade": policy, "basis": basis})
    since = None if below_days is None else AS_OF.date() - timedelta(days=below_days)
    common = {"previous_tier": prev, "previous_below_since": since, "tier_floor": floor}
    df = run(
        [
            {"customer_id": "lo", "spend_12m": spend, **common},
            {"customer_id": "hi", "spend_12m": spend + extra, **common},
        ],
        rules,
    )
    lo, hi = df["tier_rank"].to_list()
    assert hi >= lo

"""RFM: behavioural measures and ranked quintile scores, including edge cases."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from features.rfm import behaviour, rfm_scores
from features.schemas import EVENTS

AS_OF = datetime(2024, 1, 31, tzinfo=UTC)


def events(
    rows: list[tuple[str, str | None, str, float, float | None, str | None]],
) -> pl.LazyFrame:
    df = pl.DataFrame(
        [
            {
                "customer_id": c,
                "item_id": i,
                "ts": datetime.fromisoformat(ts).replace(tzinfo=UTC),
                "quantity": q,
                "unit_price": p,
                "order_id": o,
                "channel": None,
            }
            for c, i, ts, q, p, o in [(*r[:5], r[5]) for r in rows]
        ],
        schema=EVENTS,
    )
    return df.lazy()


def scored(lf: pl.LazyFrame, catalog: pl.LazyFrame | None = None) -> pl.DataFrame:
    return rfm_scores(behaviour(lf, AS_OF, catalog)).collect().sort("customer_id")


def test_behaviour_measures() -> None:
    lf = events(
        [
            ("a", "i1", "2024-01-01", 2, 10.0, "o1"),
            ("a", "i2", "2024-01-01", 1, 30.0, "o1"),
            ("a", "i3", "2024-01-21", 1, 20.0, "o2"),
            ("a", "i3", "2024-01-25", -1, 20.0, None),  # a return reduces spend
            ("a", "i9", "2024-02-10", 1, 99.0, "o9"),  # after as_of: ignored
            ("b", "i1", "2023-01-01", 1, 10.0, None),
        ]
    )
    cat = pl.LazyFrame({"item_id": ["i1", "i2", "i3"], "category": ["x", "y", "y"]})
    df = scored(lf, cat)
    a = df.row(0, named=True)
    assert a["frequency"] == 2  # orders o1, o2 (a return is not an order)
    assert a["monetary_total"] == 50.0  # 20 + 30 + 20 - 20
    assert a["monetary_avg"] == 25.0
    assert a["items_per_order"] == 2.0  # 4 units / 2 orders
    assert a["recency_days"] == 10.0
    assert a["tenure_days"] == 30.0
    assert a["category_count"] == 2
    assert a["top_category_share"] == 50 / 70  # y: 30+20 of 70 gross
    assert a["typical_spend"] == 70 / 4
    assert a["spend_12m"] == 50.0
    b = df.row(1, named=True)
    assert b["spend_12m"] == 0.0 and b["monetary_total"] == 10.0  # older than 365 days
    assert a["r_score"] > b["r_score"]


def test_frequency_without_order_id_counts_days() -> None:
    lf = events(
        [
            ("a", "i1", "2024-01-01T10:00:00", 1, 5.0, None),
            ("a", "i2", "2024-01-01T18:00:00", 1, 5.0, None),
            ("a", "i2", "2024-01-02T09:00:00", 1, 5.0, None),
        ]
    )
    assert scored(lf)["frequency"].to_list() == [2]


def test_single_customer() -> None:
    df = scored(events([("solo", "i1", "2024-01-30", 1, 3.0, None)]))
    assert df.height == 1
    assert df.select("r_score", "f_score", "m_score").row(0) == (3, 3, 3)
    assert df["rfm_cell"].item() == "333"


def test_all_ties_still_yield_five_groups() -> None:
    rows = [(f"c{i:02d}", "i1", "2024-01-10", 1, 5.0, None) for i in range(50)]
    df = scored(events(rows))
    for col in ("r_score", "f_score", "m_score"):
        counts = df.group_by(col).len().sort(col)
        assert counts[col].to_list() == [1, 2, 3, 4, 5]
        assert counts["len"].to_list() == [10] * 5


def test_skewed_one_purchase_majority() -> None:
    """Most customers bought once (CDNOW-like): still five F groups, buyers ranked sensibly."""
    rows = [(f"c{i:03d}", "i1", "2024-01-05", 1, 10.0, None) for i in range(90)]
    for i in range(10):
        rows += [(f"h{i}", "i1", f"2024-01-{d:02d}", 1, 10.0, None) for d in (2, 9, 16)]
    df = scored(events(rows))
    assert sorted(df["f_score"].unique().to_list()) == [1, 2, 3, 4, 5]
    heavy = df.filter(pl.col("customer_id").str.starts_with("h"))
    assert heavy["f_score"].min() == 5  # the 10 repeat buyers are the top 10%
    assert df["rfm_cell"].str.len_chars().unique().to_list() == [3]

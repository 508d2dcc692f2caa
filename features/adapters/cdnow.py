"""CDNOW purchase history (Fader, Hardie & Lee) into the EVENTS schema.

Two layouts exist, both whitespace-separated with leading blanks:
  CDNOW_master.txt  ``customer_id date number_of_cds dollar_value`` (optional header line)
  CDNOW_sample.txt  ``customer_id sample_id date number_of_cds dollar_value`` (no header)
Each row is one transaction (no items): quantity = number of CDs, unit_price = dollar value /
number of CDs (null when the count is 0; a dollar value of 0 gives a unit price of 0 and is
kept). order_id = ``cdnow-<row number>``: the files hold identical lines (same customer, day,
count and amount) that are separate transactions, and without an id the validator would
quarantine them as exact duplicates and lose their spend.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from features.schemas import EVENTS

_LAYOUTS: dict[int, tuple[str, ...]] = {
    4: ("customer_id", "date", "number_of_cds", "dollar_value"),
    5: ("customer_id", "sample_id", "date", "number_of_cds", "dollar_value"),
}


def read_cdnow(path: Path) -> pl.DataFrame:
    """Read a CDNOW master or sample file into a frame with exactly the EVENTS columns."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CDNOW file not found: {path}")
    lines = pl.read_csv(
        path,
        has_header=False,
        new_columns=["line"],
        separator="\x1f",
        quote_char=None,
        schema_overrides={"line": pl.String},
    )
    tokens = (
        lines.select(pl.col("line").str.extract_all(r"\S+").alias("t"))
        .filter(pl.col("t").list.len() > 0)
        # a header line starts with a non-numeric token
        .filter(pl.col("t").list.first().str.contains(r"^\d+$"))
    )
    if tokens.height == 0:
        raise ValueError(f"{path} holds no CDNOW rows (expected 4 or 5 numeric columns)")
    widths = tokens.select(pl.col("t").list.len().unique())["t"].to_list()
    if len(widths) != 1 or widths[0] not in _LAYOUTS:
        raise ValueError(
            f"{path}: rows have {sorted(widths)} columns; CDNOW master has 4 "
            "(customer_id date cds dollars), the sample has 5 (customer_id sample_id ...)"
        )
    names = _LAYOUTS[widths[0]]
    raw = tokens.with_row_index("row").select(
        pl.col("row"), *(pl.col("t").list.get(i).alias(name) for i, name in enumerate(names))
    )
    cds = pl.col("number_of_cds").cast(pl.Float64)
    dollars = pl.col("dollar_value").cast(pl.Float64)
    out = raw.select(
        pl.col("customer_id"),
        pl.lit(None, dtype=pl.String).alias("item_id"),
        pl.col("date").str.to_datetime("%Y%m%d", time_unit="us", time_zone="UTC").alias("ts"),
        cds.alias("quantity"),
        pl.when(cds != 0).then(dollars / cds).otherwise(None).alias("unit_price"),
        pl.format("cdnow-{}", pl.col("row")).alias("order_id"),
        pl.lit(None, dtype=pl.String).alias("channel"),
    )
    return out.cast(EVENTS).select(list(EVENTS))  # type: ignore[arg-type]


__all__ = ["read_cdnow"]

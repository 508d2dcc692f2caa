"""Validate purchase events: clean rows in the EVENTS schema, bad rows quarantined with a reason.

Every input row ends up in exactly one of the two outputs, so read = accepted + quarantined
always. A row gets the FIRST reason of ``REASONS`` that applies (the order is the contract,
documented in docs/data.md). All checks are polars expressions over the whole table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from features.io import InputError, parse_number, parse_string, show_columns, with_timestamp
from features.schemas import EVENTS, EVENTS_REQUIRED

# Checked in this order; a row is quarantined with the first reason that applies.
REASONS = (
    "missing_customer_id",  # customer_id absent or blank
    "missing_item_id",  # item-level file (some row has an item_id) and this row has none
    "unparseable_timestamp",  # ts absent, malformed, or outside 1970..2999
    "future_timestamp",  # ts later than now + FUTURE_TOLERANCE
    "unparseable_number",  # quantity or unit_price present but not a finite number
    "unknown_event_type",  # event_type present but not a purchase/return word
    "non_positive_quantity",  # quantity 0, or negative on a row marked as a purchase
    "negative_price",  # unit_price < 0 (refunds are negative quantities, not prices)
    "unknown_item",  # catalog given and item_id not in it
    "duplicate_row",  # same normalised event as an earlier accepted row
)
FUTURE_TOLERANCE = timedelta(minutes=5)  # clock skew allowed between producers and us
PURCHASE_WORDS = ("purchase", "sale", "order", "buy")
RETURN_WORDS = ("return", "refund")
EVENT_TYPE_COL = "event_type"

_P = "__patron_"  # prefix of internal columns (cannot clash with user columns in practice)


@dataclass(frozen=True)
class ValidationResult:
    """accepted: EVENTS schema; quarantined: row_number, input columns as strings, reason."""

    accepted: pl.DataFrame
    quarantined: pl.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


def _present(name: str, dtype: pl.DataType) -> pl.Expr:
    """True where the input cell holds a value (not null, not blank)."""
    col = pl.col(name)
    if dtype == pl.String:
        return col.str.strip_chars().str.len_bytes().fill_null(0) > 0
    return col.is_not_null()


def _reason_expr(checks: list[tuple[str, pl.Expr]]) -> pl.Expr:
    expr: Any = pl
    for reason, failed in checks:
        expr = expr.when(failed.fill_null(False)).then(pl.lit(reason))
    return expr.otherwise(pl.lit(None, dtype=pl.String))


def _as_text(name: str, dtype: pl.DataType) -> pl.Expr:
    """An input column as text for the quarantine file; nested values (lists, structs from
    Parquet) as JSON, since polars cannot cast them to strings."""
    if dtype.is_nested():
        return pl.struct(pl.col(name)).struct.json_encode().alias(name)
    return pl.col(name).cast(pl.String, strict=False)


def _output_name(name: str, taken: set[str]) -> str:
    while name in taken:
        name = f"{name}_input"
    return name


def validate(
    events: pl.DataFrame | pl.LazyFrame,
    catalog: pl.DataFrame | None = None,
    now: datetime | None = None,
) -> ValidationResult:
    """Split raw events into accepted (EVENTS schema) and quarantined rows with a reason.

    ``events`` may have any column dtypes (CSV read as strings, typed Parquet, ...); extra
    columns are ignored. Required columns: customer_id and ts; missing ones raise InputError.
    Negative quantities are returns and are kept; an optional ``event_type`` column
    (purchase/return) makes the intent explicit.
    """
    lf = events.lazy()
    schema = lf.collect_schema()
    missing = [c for c in EVENTS_REQUIRED if c not in schema]
    if missing:
        raise InputError(
            f"missing required column(s) {', '.join(missing)}; found {show_columns(schema.names())}"
        )
    original = schema.names()
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    limit = now + FUTURE_TOLERANCE

    def opt(name: str, parser: Any, dtype: pl.DataType) -> pl.Expr:
        return parser(name, schema[name]) if name in schema else pl.lit(None, dtype=dtype)

    cust = parse_string("customer_id", schema["customer_id"])
    item = opt("item_id", parse_string, pl.String())
    qty = opt("quantity", parse_number, pl.Float64())
    price = opt("unit_price", parse_number, pl.Float64())
    qty_present = (
        _present("quantity", schema["quantity"]) if "quantity" in schema else pl.lit(False)
    )
    price_present = (
        _present("unit_price", schema["unit_price"]) if "unit_price" in schema else pl.lit(False)
    )
    if EVENT_TYPE_COL in schema:
        etype = (
            pl.col(EVENT_TYPE_COL)
            .cast(pl.String, strict=False)
            .str.strip_chars()
            .str.to_lowercase()
        )
        etype_given = etype.str.len_bytes().fill_null(0) > 0
        is_return = etype.is_in(list(RETURN_WORDS)).fill_null(False)
        is_purchase = etype.is_in(list(PURCHASE_WORDS)).fill_null(False)
        bad_etype = etype_given & ~is_return & ~is_purchase
    else:
        is_return = is_purchase = bad_etype = pl.lit(False)

    base = with_timestamp(lf.with_row_index(f"{_P}row", offset=1), "ts", f"{_P}ts")
    base = base.with_columns(
        cust.alias(f"{_P}customer_id"),
        item.alias(f"{_P}item_id"),
        qty.alias(f"{_P}qty_parsed"),
        price.alias(f"{_P}unit_price"),
        qty_present.alias(f"{_P}qty_present"),
        price_present.alias(f"{_P}price_present"),
        is_return.alias(f"{_P}is_return"),
        is_purchase.alias(f"{_P}is_purchase"),
        bad_etype.alias(f"{_P}bad_etype"),
    )
    c = {k: pl.col(f"{_P}{k}") for k in ("customer_id", "item_id", "ts", "unit_price")}
    q_raw = pl.col(f"{_P}qty_parsed")
    quantity = (
        pl.when(~pl.col(f"{_P}qty_present"))
        .then(pl.lit(1.0))
        .otherwise(q_raw)
        .pipe(lambda q: pl.when(pl.col(f"{_P}is_return")).then(-q.abs()).otherwise(q))
    )
    base = base.with_columns(quantity.alias(f"{_P}quantity"))
    q = pl.col(f"{_P}quantity")
    checks: list[tuple[str, pl.Expr]] = [
        ("missing_customer_id", c["customer_id"].is_null()),
        # item-level file: some row has an item_id (transaction-only data has none at all)
        ("missing_item_id", c["item_id"].is_null() & c["item_id"].is_not_null().any()),
        ("unparseable_timestamp", c["ts"].is_null()),
        ("future_timestamp", c["ts"] > pl.lit(limit).cast(pl.Datetime("us", "UTC"))),
        (
            "unparseable_number",
            (pl.col(f"{_P}qty_present") & q_raw.is_null())
            | (pl.col(f"{_P}price_present") & c["unit_price"].is_null()),
        ),
        ("unknown_event_type", pl.col(f"{_P}bad_etype")),
        ("non_positive_quantity", (q == 0) | ((q < 0) & pl.col(f"{_P}is_purchase"))),
        ("negative_price", c["unit_price"] < 0),
    ]
    if catalog is not None:
        if "item_id" not in catalog.columns:
            raise InputError("catalog has no item_id column")
        known = catalog.select(
            parse_string("item_id", catalog.schema["item_id"]).alias("item_id")
        ).to_series()
        unknown = c["item_id"].is_not_null() & ~c["item_id"].is_in(known.implode())
        checks.append(("unknown_item", unknown))
    base = base.with_columns(_reason_expr(checks).alias(f"{_P}reason"))
    norm = [
        c["customer_id"].alias("customer_id"),
        c["item_id"].alias("item_id"),
        c["ts"].alias("ts"),
        q.alias("quantity"),
        c["unit_price"].alias("unit_price"),
        opt("order_id", parse_string, pl.String()).alias("order_id"),
        opt("channel", parse_string, pl.String()).alias("channel"),
    ]
    base = base.with_columns([e.name.prefix(f"{_P}n_") for e in norm])
    ncols = [pl.col(f"{_P}n_{name}") for name in EVENTS]
    ok = pl.col(f"{_P}reason").is_null()
    dup = ok & ~pl.struct([ok.alias("ok"), *ncols]).is_first_distinct()
    base = base.with_columns(
        pl.when(dup)
        .then(pl.lit("duplicate_row"))
        .otherwise(pl.col(f"{_P}reason"))
        .alias(f"{_P}reason")
    )
    # Pass 1 keeps only the normalised columns (the raw text is dropped as soon as it is
    # parsed); pass 2 re-reads the raw text of the rejected rows only. This bounds memory by
    # the clean table, not clean + raw.
    row, reason = pl.col(f"{_P}row"), pl.col(f"{_P}reason")
    try:
        df = base.select(row, *ncols, reason).collect()
        bad = df.filter(reason.is_not_null()).select(row, reason)
        raw_bad = (
            lf.with_row_index(f"{_P}row", offset=1)
            .join(bad.lazy(), on=f"{_P}row", how="inner")
            .sort(f"{_P}row")
            .collect()
        )
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read events: {' '.join(str(exc).split())[:200]}") from None

    accepted = (
        df.filter(reason.is_null())
        .select([pl.col(f"{_P}n_{name}").alias(name) for name in EVENTS])
        .cast(EVENTS)  # type: ignore[arg-type]
    )
    taken = set(original)
    row_name = _output_name("row_number", taken)
    reason_name = _output_name("reason", taken)
    quarantined = raw_bad.select(
        row.cast(pl.Int64).alias(row_name),
        *[_as_text(n, schema[n]) for n in original],
        reason.alias(reason_name),
    )
    counts = dict(quarantined.group_by(reason_name).len().iter_rows())
    summary: dict[str, Any] = {
        "read": df.height,
        "accepted": accepted.height,
        "quarantined": quarantined.height,
        "reasons": {r: counts[r] for r in REASONS if r in counts},
        "returns": int((accepted["quantity"] < 0).sum()),
        "transaction_only": bool(accepted.height and accepted["item_id"].is_null().all()),
    }
    return ValidationResult(accepted, quarantined, summary)

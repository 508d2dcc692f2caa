"""``patron features`` and ``patron clv`` commands."""

from __future__ import annotations

import time
from datetime import date, datetime
from pathlib import Path

import polars as pl
import typer

from features.schemas import EVENTS
from patron.cliutil import UserError, command, emit

features_app = typer.Typer(no_args_is_help=True, help="Customer and item loyalty features.")
clv_app = typer.Typer(no_args_is_help=True, help="Customer lifetime value models.")


def read_events(path: Path) -> pl.LazyFrame:
    """Validated events as Parquet (EVENTS schema), a simple CSV, or a raw CDNOW .txt file."""
    if not path.exists():
        raise UserError(f"events file not found: {path}")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".parquet":
        lf = pl.scan_parquet(path if path.is_file() else path / "*.parquet")
    elif suffix == ".csv":
        lf = pl.scan_csv(path, schema_overrides={"customer_id": pl.String, "item_id": pl.String})
    elif suffix == ".txt":
        from features.adapters.cdnow import read_cdnow

        lf = read_cdnow(path).lazy()
    else:
        raise UserError(f"{path}: expected a .parquet, .csv or CDNOW .txt events file")
    names = lf.collect_schema().names()
    missing = [c for c in ("customer_id", "ts") if c not in names]
    if missing:
        raise UserError(
            f"{path}: events lack required column(s) {missing}; see features/schemas.py"
        )
    exprs = []
    for col, dtype in EVENTS.items():
        if col not in names:
            exprs.append(pl.lit(None, dtype=dtype).alias(col))
        elif col == "ts":
            exprs.append(_to_ts(lf.collect_schema()["ts"]))
        else:
            exprs.append(pl.col(col).cast(dtype))
    return lf.select(exprs)


def _to_ts(dtype: pl.DataType) -> pl.Expr:
    if dtype == pl.String:
        return pl.col("ts").str.to_datetime(time_unit="us", time_zone="UTC")
    if isinstance(dtype, pl.Datetime):
        e = pl.col("ts").cast(pl.Datetime("us", dtype.time_zone))
        return (
            e.dt.replace_time_zone("UTC")
            if dtype.time_zone is None
            else e.dt.convert_time_zone("UTC")
        )
    if dtype == pl.Date:
        return pl.col("ts").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    # numbers: unix seconds
    return (pl.col("ts").cast(pl.Float64) * 1e6).cast(pl.Int64).cast(pl.Datetime("us", "UTC"))


def _parse_date(value: str, option: str) -> date:
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise UserError(f"{option} must be a date like 1997-09-30, got {value!r}") from None


@clv_app.command("fit")
@command
def clv_fit(
    events: Path = typer.Option(..., "--events", help="Events Parquet/CSV or a CDNOW .txt file."),
    calibration_end: str = typer.Option(..., "--calibration-end", help="Last day (YYYY-MM-DD)."),
    holdout_end: str | None = typer.Option(None, "--holdout-end", help="Holdout end day."),
) -> None:
    """Fit BG/NBD + Gamma-Gamma on the calibration period and score the holdout."""
    from features.clv_data import fit_from_events

    cal = _parse_date(calibration_end, "--calibration-end")
    hold = _parse_date(holdout_end, "--holdout-end") if holdout_end else None
    t0 = time.perf_counter()
    result = fit_from_events(read_events(events).collect(), cal, hold)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    emit(result)

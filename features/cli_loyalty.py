"""``patron features`` and ``patron clv`` commands."""

from __future__ import annotations

import time
from datetime import date, datetime
from pathlib import Path

import polars as pl
import typer

from features.schemas import EVENTS
from patron.cliutil import UserError, command, emit
from patron.spark import conf_option, engine_option, master_option

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
    model: str = typer.Option(
        "auto",
        "--model",
        help="Purchase model to recommend (``chosen``): bgnbd, pareto_nbd, or auto (the smaller "
        "weekly holdout tracking error; without a holdout the larger log-likelihood).",
    ),
    covariate: str | None = typer.Option(
        None,
        "--covariate",
        help="Also fit Pareto/NBD with this covariate on purchase and dropout rates: cohort "
        "(first purchase month), first_order_value (quintile) or a column of --customers "
        "(e.g. channel), with a likelihood-ratio test.",
    ),
    customers: Path | None = typer.Option(
        None, "--customers", help="Customers file holding a --covariate column."
    ),
    intervals: float | None = typer.Option(
        None, "--intervals", min=1.0, max=99.9, help="Bootstrap intervals of the parameters (%)."
    ),
    draws: int = typer.Option(100, "--draws", min=2, help="Bootstrap draws."),
) -> None:
    """Fit BG/NBD, Pareto/NBD + Gamma-Gamma on the calibration period and score the holdout."""
    from features.clv_data import COVARIATES, MODELS, fit_from_events

    if model not in MODELS:
        raise UserError(f"--model must be one of {', '.join(MODELS)}, got {model!r}")
    people = _read_table(customers, "customers").collect() if customers else None
    if people is not None and "customer_id" not in people.columns:
        raise UserError(f"{customers}: the customers file needs a customer_id column")
    known = (*COVARIATES, *(people.columns if people is not None else ()))
    if covariate is not None and (covariate not in known or covariate == "customer_id"):
        raise UserError(
            f"--covariate must be one of {', '.join(COVARIATES)} or a column of --customers, "
            f"got {covariate!r}"
        )
    cal = _parse_date(calibration_end, "--calibration-end")
    hold = _parse_date(holdout_end, "--holdout-end") if holdout_end else None
    t0 = time.perf_counter()
    result = fit_from_events(
        read_events(events).collect(), cal, hold, model, covariate, intervals, draws, people
    )
    result["seconds"] = round(time.perf_counter() - t0, 3)
    emit(result)


def _read_table(path: Path, what: str) -> pl.LazyFrame:
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    if path.suffix.lower() == ".parquet":
        return pl.scan_parquet(path)
    if path.suffix.lower() == ".csv":
        return pl.scan_csv(path, schema_overrides={"customer_id": pl.String, "item_id": pl.String})
    raise UserError(f"{path}: {what} must be .parquet or .csv")


def _parse_as_of(value: str | None, events: pl.LazyFrame) -> datetime:
    """A date means the end of that day (UTC); default: the latest event time."""
    from datetime import UTC, timedelta

    if value is None:
        latest = events.select(pl.col("ts").max()).collect().item()
        if latest is None:
            raise UserError("the events file holds no events")
        return latest  # type: ignore[no-any-return]
    try:
        if len(value) == 10:
            d = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
            return d + timedelta(days=1) - timedelta(microseconds=1)
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except ValueError:
        raise UserError(
            f"--as-of must be a date (1998-06-30) or ISO datetime, got {value!r}"
        ) from None


@features_app.command("build")
@command
def features_build(
    events: str = typer.Option(
        ...,
        "--events",
        help="Validated events (Parquet/CSV/CDNOW .txt); with --engine spark, Parquet at a "
        "path or any Hadoop URI (s3a://, hdfs://, ...).",
    ),
    out: Path = typer.Option(..., "--out", help="Output folder for customers/items.parquet."),
    catalog: Path | None = typer.Option(None, "--catalog", help="Catalog Parquet/CSV."),
    customers: Path | None = typer.Option(
        None, "--customers", help="Customers file (consent, nps, tier_floor)."
    ),
    as_of: str | None = typer.Option(None, "--as-of", help="Default: the latest event time."),
    tiers_file: Path | None = typer.Option(
        None, "--tiers", help="Tier rules YAML (default: built-in, same as config/tiers.yaml)."
    ),
    previous: Path | None = typer.Option(
        None, "--previous", help="Previous customers.parquet (for grace periods/downgrades)."
    ),
    horizon_weeks: int = typer.Option(52, "--horizon-weeks", min=1, help="CLV horizon."),
    discount: float = typer.Option(0.10, "--discount", min=0.0, help="Annual discount rate."),
    index_weights: Path | None = typer.Option(
        None,
        "--index-weights",
        help="JSON of loyalty-index weights (from `patron features calibrate-index --out`).",
    ),
    clv_model: str = typer.Option(
        "bgnbd", "--clv-model", help="Purchase model for p_alive and CLV: bgnbd or pareto_nbd."
    ),
    clv_intervals: float | None = typer.Option(
        None,
        "--clv-intervals",
        min=1.0,
        max=99.9,
        help="Add each customer's bootstrap interval (e.g. 90) of expected purchases and CLV.",
    ),
    clv_draws: int = typer.Option(100, "--clv-draws", min=2, help="Bootstrap draws."),
    engine: str = engine_option(),
    spark_master: str | None = master_option(),
    spark_conf: list[str] = conf_option(),
) -> None:
    """Build customers.parquet and items.parquet."""
    from features.customers import CLV_MODELS, ClvOptions, build_customers
    from features.items import build_items
    from features.tiers import load_rules, write_tier_names
    from patron.spark import check_engine, parse_conf

    if clv_model not in CLV_MODELS:
        raise UserError(f"--clv-model must be one of {', '.join(CLV_MODELS)}, got {clv_model!r}")
    check_engine(engine)
    conf = parse_conf(spark_conf)
    t0 = time.perf_counter()
    rules = load_rules(tiers_file)
    cat = _read_table(catalog, "catalog").collect().lazy() if catalog else None
    people = _read_table(customers, "customers") if customers else None
    prev = _read_table(previous, "previous customers") if previous else None
    weights = _read_weights(index_weights) if index_weights else None
    opts = ClvOptions(horizon_weeks, discount, clv_model, clv_intervals, clv_draws)
    if engine == "spark":
        from features import spark_features
        from patron.spark import spark_session

        given = _parse_as_of(as_of, pl.LazyFrame()) if as_of else None
        with spark_session(spark_master, conf, "patron features build") as spark:
            table, items, when, info = spark_features.build(
                spark,
                events,
                given,
                rules,
                cat.collect() if cat is not None else None,
                people,
                prev,
                opts,
                weights,
            )
    else:
        ev = read_events(Path(events)).collect().lazy()  # read once, reused by every table
        when = _parse_as_of(as_of, ev)
        table, info = build_customers(ev, when, rules, cat, people, prev, opts, weights)
        items = build_items(ev, table, when, cat)
    out.mkdir(parents=True, exist_ok=True)
    table.write_parquet(out / "customers.parquet")
    items.write_parquet(out / "items.parquet")
    write_tier_names(out, rules)
    emit(
        {
            "as_of": when.isoformat(),
            "customers_path": str(out / "customers.parquet"),
            "items_path": str(out / "items.parquet"),
            "items": items.height,
            **info,
            "seconds": round(time.perf_counter() - t0, 2),
        }
    )


def _read_weights(path: Path) -> dict[str, float]:
    import json

    from features.loyalty import check_weights

    if not path.is_file():
        raise UserError(f"index weights file not found: {path}")
    try:
        raw = json.loads(path.read_text())
        weights = raw.get("weights", raw) if isinstance(raw, dict) else None
        if not isinstance(weights, dict):
            raise ValueError("expected a JSON object of measure: weight")
        return check_weights(weights)
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from None


@features_app.command("calibrate-index")
@command
def features_calibrate_index(
    events: Path = typer.Option(..., "--events", help="Events Parquet/CSV or a CDNOW .txt file."),
    calibration_end: str = typer.Option(..., "--calibration-end", help="Last day (YYYY-MM-DD)."),
    holdout_end: str = typer.Option(..., "--holdout-end", help="Holdout end day."),
    out: Path | None = typer.Option(None, "--out", help="Write the chosen weights (JSON)."),
) -> None:
    """How well the loyalty index, RFM score and CLV predict holdout purchases and spend, and
    index weights chosen on half the customers, checked on the other half."""
    import json

    from features import index_validity as iv
    from features.customers import build_customers
    from features.loyalty import BEHAVIOURAL_WEIGHTS
    from features.tiers import load_rules

    cal = _parse_date(calibration_end, "--calibration-end")
    hold = _parse_date(holdout_end, "--holdout-end")
    if hold <= cal:
        raise UserError("--holdout-end must be after --calibration-end")
    t0 = time.perf_counter()
    ev = read_events(events).collect()
    before = ev.lazy().filter(pl.col("ts").dt.date() <= cal)
    table, _ = build_customers(before, _parse_as_of(calibration_end, before), load_rules(None))
    df = iv.with_outcomes(table, iv.holdout_outcomes(ev, cal, hold))
    fit, check = iv.halves(df)
    weights = iv.calibrate_weights(fit)
    default = {m: w for m, (w, _) in BEHAVIOURAL_WEIGHTS.items()}
    result = {
        "customers": df.height,
        "all_customers_default_weights": iv.report(df),
        "check_half": {
            "customers": check.height,
            "default_weights": iv.report(check, default),
            "calibrated_weights": iv.report(check, weights),
        },
        "default_weights": default,
        "calibrated_weights": weights,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"weights": weights}, indent=1) + "\n")
        result["weights_path"] = str(out)
    emit(result)


@features_app.command("publish")
@command
def features_publish(
    features: Path = typer.Option(..., "--features", help="Folder from `patron features build`."),
    redis_url: str | None = typer.Option(None, "--redis-url", help="Default: PATRON_REDIS_URL."),
    cluster: bool | None = typer.Option(
        None, "--redis-cluster/--redis-node", help="Default: PATRON_REDIS_CLUSTER."
    ),
    namespace: str | None = typer.Option(
        None, "--namespace", help="Default: PATRON_REDIS_NAMESPACE."
    ),
    ttl_s: int = typer.Option(86_400, "--ttl", min=1, help="Seconds the previous version lives."),
) -> None:
    """Publish customer features and item flags to Redis as a new version, atomically."""
    import redis

    from features.online import OnlineStore
    from patron.redis_connect import connect
    from patron.settings import get_settings

    s = get_settings()
    cust_path, items_path = features / "customers.parquet", features / "items.parquet"
    if not cust_path.is_file():
        raise UserError(f"{cust_path} not found; run `patron features build --out {features}`")
    customers = pl.read_parquet(cust_path)
    items = pl.read_parquet(items_path) if items_path.is_file() else pl.DataFrame()
    try:
        client = connect(redis_url or s.redis_url, s.redis_cluster if cluster is None else cluster)
        client.ping()
    except redis.RedisError as exc:
        raise UserError(f"cannot reach Redis at {redis_url or s.redis_url}: {exc}") from None
    report = OnlineStore(client, namespace or s.redis_namespace).publish(customers, items, ttl_s)
    emit(
        {
            "version": report.version,
            "customers": report.customers,
            "items": report.items,
            "seconds": round(report.seconds, 3),
            "bytes_per_customer": report.bytes_per_customer,
            **report.extra,
        }
    )

"""``patron rules check`` and ``patron picks export``."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from patron.cliutil import command, emit
from patron.spark import conf_option, engine_option, master_option

rules_app = typer.Typer(no_args_is_help=True)
picks_app = typer.Typer(no_args_is_help=True)


@picks_app.callback()
def _picks() -> None:
    """Personalised email picks (same candidates and rules as the API)."""


@rules_app.command("check")
@command
def rules_check(
    file: Path = typer.Argument(..., help="Rule file to validate (YAML)."),
) -> None:
    """Validate a rule file; print its summary, or name the rule, field and problem (exit 2)."""
    from serving.rules.loader import load_rules

    loaded = load_rules(file)
    emit({"valid": True, **loaded.summary()})


@rules_app.command("show")
@command
def rules_show() -> None:
    """Summary of the active rule file (PATRON_RULES_FILE or config/rules.yaml)."""
    from serving.rules.loader import load_rules

    emit({"valid": True, **load_rules().summary()})


@picks_app.command("export")
@command
def picks_export(
    out: Path = typer.Option(..., "--out", help="Output file (written atomically)."),
    k: int = typer.Option(8, "--k", min=1, max=100, help="Picks per customer."),
    tier: str | None = typer.Option(None, "--tier", help="Only customers in this tier."),
    segment: str | None = typer.Option(None, "--segment", help="Only customers in this segment."),
    fmt: str = typer.Option("parquet", "--format", help="parquet | csv | jsonl"),
    no_rules: bool = typer.Option(False, "--no-rules", help="Baseline without business rules."),
    bundle: Path | None = typer.Option(None, "--bundle", help="Model bundle directory."),
    features: Path | None = typer.Option(
        None, "--features", help="Folder with customers.parquet (features build output)."
    ),
    redis_url: str | None = typer.Option(
        None, "--redis-url", help="Read customers' online features (as the API does)."
    ),
    rules_file: Path | None = typer.Option(
        None, "--rules", help="Rule file (default PATRON_RULES_FILE or config/rules.yaml)."
    ),
    batch_size: int = typer.Option(2048, min=1, help="Customers per vectorised batch."),
    threads: int = typer.Option(
        0, min=0, help="Threads scoring batches in parallel (0 = all cores)."
    ),
    attribution: bool = typer.Option(
        True,
        "--attribution/--no-attribution",
        help="With --redis-url: record what each email served under its recommendation_id, "
        "so outcome events naming it count for A/B (off: the ids are still written).",
    ),
    engine: str = engine_option(),
    spark_master: str | None = master_option(),
    spark_conf: list[str] = conf_option(),
) -> None:
    """Write k picks per consenting customer (item ids, scores, reasons, tier, segment);
    with --engine spark, --out is a Parquet directory (any Hadoop URI) and --features the
    customers.parquet path or URI."""
    import polars as pl
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from patron.cliutil import UserError
    from patron.settings import get_settings
    from patron.spark import check_engine, parse_conf
    from serving.export import export_picks
    from serving.rules.loader import load_rules

    if fmt not in ("parquet", "csv", "jsonl"):
        raise UserError(f"--format {fmt!r}: use parquet, csv or jsonl")
    check_engine(engine)
    conf = parse_conf(spark_conf)
    if engine == "spark" and (redis_url is not None or features is None or fmt != "parquet"):
        raise UserError(
            "--engine spark reads the customer table (--features) and writes Parquet; "
            "--redis-url and --format csv/jsonl are local-engine options"
        )
    if bundle is None:
        raise UserError("--bundle DIR is required (the model bundle to recommend from)")
    if features is None and redis_url is None:
        raise UserError("give --features DIR (customers.parquet) or --redis-url URL")
    rules = None if no_rules else load_rules(rules_file)

    from serving.model import load_model

    model = load_model(bundle)
    if rules is not None:
        from serving.rules.loader import check_tiers
        from serving.rules.models import RuleError

        try:
            check_tiers(rules, model.tiers)
        except RuleError as exc:
            raise UserError(str(exc)) from None
    read_online = None
    record_answers = None
    if redis_url is not None:
        from features.online import OnlineStore
        from patron.redis_connect import connect
        from serving.export import RECENT_K

        s = get_settings()
        store = OnlineStore(connect(redis_url, s.redis_cluster), s.redis_namespace)

        def read_online(ids: list[str]) -> list:  # type: ignore[type-arg]
            return store.read_customers(ids, RECENT_K)

        if attribution:
            from serving.attribution.store import AttributionStore

            answers = AttributionStore.from_settings(store.r, s)
            record_answers = answers.write_answers_sync

    if engine == "spark":
        from patron.spark import spark_session
        from serving.export.spark_job import export_picks_spark, rules_json
        from serving.rules.loader import fallback_only

        assert features is not None
        uri = str(features)
        if features.is_dir() and (features / "customers.parquet").is_file():
            uri = str(features / "customers.parquet")
        with spark_session(spark_master, conf, "patron picks export") as spark:
            report = export_picks_spark(
                spark,
                bundle,
                uri,
                str(out),
                rules_text=rules_json(rules) if rules is not None else None,
                rules_version=(rules or fallback_only()).version,
                model_version=model.version,
                k=k,
                tier=tier,
                segment=segment,
                batch_size=batch_size,
            )
        emit(report.as_dict())
        return
    if features is not None:
        path = features / "customers.parquet" if features.is_dir() else features
        if not path.is_file():
            raise UserError(f"{path} not found: run `patron features build` first")
        customers = pl.read_parquet(path)
        if "customer_id" not in customers.columns:
            raise UserError(f"{path}: no customer_id column")
    else:
        if tier is not None or segment is not None:
            raise UserError("--tier/--segment need --features (the customer table)")
        # every customer of the model; consent is checked on each online row
        customers = pl.DataFrame(
            {"customer_id": model.data.customer_ids.astype(str), "marketing_consent": True}
        )
    with Progress(
        TextColumn("picks"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("picks", total=customers.height)
        report = export_picks(
            model,
            customers,
            out,
            rules=rules,
            k=k,
            fmt=fmt,  # type: ignore[arg-type]
            tier=tier,
            segment=segment,
            read_online=read_online,
            batch_size=batch_size,
            progress=lambda n: bar.advance(task, n),
            threads=threads or (os.cpu_count() or 1),
            record_answers=record_answers,
        )
    emit(report.as_dict())

"""``patron ab report``: the A/B decision report from the counters in Redis."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import typer

from patron.cliutil import UserError, command, emit

ab_app = typer.Typer(no_args_is_help=True)


@ab_app.callback()
def _ab() -> None:
    """Measured A/B tests: what each variant's answers led to."""


def _day(text: str | None, option: str, default: date) -> date:
    if text is None:
        return default
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UserError(f"{option} {text!r}: a date like 2026-12-01") from None


def online_report(
    *,
    since: str | None = None,
    until: str | None = None,
    experiment: str | None = None,
    metric: str = "conversion",
    target_lift: float = 0.10,
    power: float = 0.8,
    redis_url: str | None = None,
) -> dict[str, Any]:
    """The report of ``experiment`` (default: the busiest) over the counter days since..until
    (default: the last PATRON_AB_RETENTION_DAYS up to today, UTC)."""
    from redis.exceptions import RedisError

    from patron.redis_connect import connect
    from patron.settings import get_settings
    from serving.attribution.report import build_report, days_between
    from serving.attribution.store import AttributionStore

    s = get_settings()
    today = datetime.now(UTC).date()
    end = _day(until, "--until", today)
    start = _day(since, "--since", end - timedelta(days=s.ab_retention_days - 1))
    try:
        days = days_between(start, end)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if len(days) > 1_000:
        raise UserError(f"--since {start} to --until {end}: at most 1000 days")
    url = redis_url or s.redis_url
    client = connect(url, s.redis_cluster, socket_timeout=10, socket_connect_timeout=5)
    try:
        totals = AttributionStore.from_settings(client, s).totals_sync(days, experiment)
    except (RedisError, OSError) as exc:
        raise UserError(f"cannot read the A/B counters from {url}: {exc}") from None
    finally:
        client.close()
    report = build_report(
        totals,
        experiment=experiment,
        confidence=s.ab_confidence,
        metric=metric,
        target_lift=target_lift,
        power=power,
    )
    return {**report, "since": start.isoformat(), "until": end.isoformat()}


def online_verdict(champion_version: str, challenger_version: str) -> dict[str, Any]:
    """The report of champion against challenger (the promotion gate's online check)."""
    from serving.attribution.ids import experiment_of

    return online_report(experiment=experiment_of(champion_version, challenger_version))


@ab_app.command("report")
@command
def ab_report(
    since: str | None = typer.Option(None, "--since", help="First day (UTC), e.g. 2026-12-01."),
    until: str | None = typer.Option(None, "--until", help="Last day (UTC), default today."),
    experiment: str | None = typer.Option(
        None, "--experiment", help="<champion>~<challenger> versions (default: the busiest)."
    ),
    metric: str = typer.Option(
        "conversion", "--metric", help="Metric of the verdict: conversion, ctr, revenue_per_answer."
    ),
    target_lift: float = typer.Option(
        0.10, "--target-lift", help="Relative lift the traffic estimate is for (0.10 = +10%)."
    ),
    power: float = typer.Option(
        0.8, "--power", help="Power of the traffic estimate and the minimum detectable effect."
    ),
    png: Path | None = typer.Option(None, "--png", help="Also draw the rates as a PNG here."),
    redis_url: str | None = typer.Option(None, "--redis-url", help="Default PATRON_REDIS_URL."),
) -> None:
    """Per variant CTR, conversion and revenue per answer with intervals, tests of the
    differences, the power at the current traffic and a verdict; JSON on the last line."""
    from serving.attribution.report import PRIMARY, plot_report, table_lines

    if metric not in PRIMARY:
        raise UserError(f"--metric {metric!r}: one of {', '.join(PRIMARY)}")
    if not -1 < target_lift < 10 or target_lift == 0:
        raise UserError(f"--target-lift {target_lift}: a non-zero relative lift above -1")
    if not 0.5 <= power < 1:
        raise UserError(f"--power {power}: in [0.5, 1)")
    report = online_report(
        since=since,
        until=until,
        experiment=experiment,
        metric=metric,
        target_lift=target_lift,
        power=power,
        redis_url=redis_url,
    )
    for line in table_lines(report):
        typer.echo(line)
    if png is not None:
        report["png"] = str(plot_report(report, png))
    emit(report)

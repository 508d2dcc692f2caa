"""The one place Patron starts Spark (``--engine spark``) and moves tables to and from it.

PySpark is an optional extra (``pip install 'patron[spark]'``, plus a Java 17+ runtime).
Every Spark job reads and writes with the session timezone UTC, so days and timestamps mean
what the local (polars) jobs mean. Tables come back to the driver as Arrow (no pandas, no
pickle). With a ``local[...]`` master the driver binds to 127.0.0.1 only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import polars as pl
import typer

from patron.cliutil import UserError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

ENGINES = ("local", "spark")
INSTALL_LINE = "pip install 'patron[spark]' (and a Java 17+ runtime, e.g. openjdk-17-jre-headless)"

# what every Patron session sets; --spark-conf KEY=VALUE overrides or adds to it
BASE_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.showConsoleProgress": "false",
}


def engine_option() -> Any:
    return typer.Option(
        "local", "--engine", help="local (one process) or spark (the event log on Spark)."
    )


def master_option() -> Any:
    return typer.Option(
        None, "--spark-master", help="Spark master (default PATRON_SPARK_MASTER or local[*])."
    )


def conf_option() -> Any:
    return typer.Option([], "--spark-conf", help="Spark setting KEY=VALUE (repeatable).")


def check_engine(engine: str) -> None:
    """A known engine, and for ``spark`` an importable PySpark (else the install line)."""
    if engine not in ENGINES:
        raise UserError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "spark":
        try:
            import pyspark  # noqa: F401
        except ImportError:
            raise UserError(f"--engine spark needs PySpark: {INSTALL_LINE}") from None


def parse_conf(pairs: list[str] | None) -> dict[str, str]:
    """``KEY=VALUE`` strings (``--spark-conf``) as a mapping; a clear error otherwise."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--spark-conf expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value
    return out


def master_or_default(master: str | None) -> str:
    """``--spark-master``, else the setting (PATRON_SPARK_MASTER, default local[*])."""
    from patron.settings import get_settings

    return master or get_settings().spark_master


@contextmanager
def spark_session(
    master: str | None = None, conf: Mapping[str, str] | None = None, app: str = "patron"
) -> Iterator[SparkSession]:
    """A Spark session for one job, stopped afterwards unless it was already running (e.g.
    inside ``spark-submit`` or a notebook, where the caller owns it)."""
    check_engine("spark")
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    url = master_or_default(master)
    builder = SparkSession.builder.appName(app).master(url)
    settings = dict(BASE_CONF)
    if url.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # the JVM binds there too
        # Python workers run this interpreter (and so see Patron and its dependencies); on a
        # cluster the executors' Python needs `pip install 'patron[spark]'`
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        settings |= {
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.driver.host": "127.0.0.1",
        }
    settings |= dict(conf or {})
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    try:
        yield session
    finally:
        session.stop()


def to_polars(frame: DataFrame) -> pl.DataFrame:
    """Collect a Spark DataFrame on the driver through Arrow."""
    table = frame.toArrow()
    out = pl.from_arrow(table)
    assert isinstance(out, pl.DataFrame)
    return out


def from_polars(spark: SparkSession, frame: pl.DataFrame, partitions: int | None = None) -> Any:
    """A Spark DataFrame from a polars one (through Arrow), optionally repartitioned."""
    sdf = spark.createDataFrame(frame.to_arrow())
    return sdf.repartition(partitions) if partitions else sdf

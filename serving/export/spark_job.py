"""``patron picks export --engine spark``: the email export with customers spread over executors.

Each Spark partition of the consenting customers is scored by the same function as the local
export (``serving.export.job.picks_of``: the scoring library, then the rules pass), through
``mapInArrow``: Arrow batches in, Arrow batches out, nothing pickled but the function. Every
executor process loads the bundle once from a path it can read (shared storage, or the local
disk in local mode) and parses the rules from their text, which travels with the function.

The output is a directory of Parquet part files, written to a temporary sibling and renamed
into place after Spark's commit (``_SUCCESS`` inside): readers never see a partial directory
(on object stores, where a rename is a copy, ``_SUCCESS`` is the signal).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from features.spark_features import read_table
from serving.export.job import ExportReport

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

OUTPUT_SCHEMA = (
    "customer_id string, recommendation_id string, rank int, item_id string, score float, "
    "reasons array<string>, "
    "tier string, segment string"
)
CONTEXT_COLUMNS = ("customer_id", "tier", "segment", "churn_risk", "clv_band", "typical_spend")

_LOADED: dict[tuple[str, str], Any] = {}  # per executor process: (bundle, rules) -> loaded


def rules_json(rules: Any) -> str:
    """A loaded rule set as the JSON its executors parse (same rules, same version)."""
    return json.dumps(rules.rules.model_dump(mode="json"))


def _loaded(bundle: str, rules_text: str | None) -> tuple[Any, Any]:
    key = (bundle, rules_text or "")
    if key not in _LOADED:
        from serving.model import load_model
        from serving.rules.loader import fallback_only, parse_rules

        model = load_model(Path(bundle))
        rules = fallback_only() if rules_text is None else parse_rules(json.loads(rules_text))
        _LOADED.clear()  # one model per process: a new export replaces the previous one
        _LOADED[key] = (model, rules)
    return _LOADED[key]  # type: ignore[no-any-return]


def score_partition(bundle: str, rules_text: str | None, k: int, batch_size: int) -> Any:
    """The ``mapInArrow`` function: customer rows in, pick rows out (OUTPUT_SCHEMA)."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import numpy as np
        import polars as pl
        import pyarrow as pa

        from serving.export.job import picks_of
        from serving.index import faiss_threads

        model, rules = _loaded(bundle, rules_text)
        schema = pa.schema(
            [
                ("customer_id", pa.string()),
                ("recommendation_id", pa.string()),
                ("rank", pa.int32()),
                ("item_id", pa.string()),
                ("score", pa.float32()),
                ("reasons", pa.list_(pa.string())),
                ("tier", pa.string()),
                ("segment", pa.string()),
            ]
        )  # OUTPUT_SCHEMA in Arrow's types (polars writes large lists and strings)
        item_ids = np.asarray(model.items.item_ids).astype(str)
        for batch in batches:
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            for start in range(0, frame.height, batch_size):
                with faiss_threads(1):
                    done = picks_of(
                        frame.slice(start, batch_size), model, rules, k, None, None, item_ids
                    )
                if done.frame is not None and done.frame.height:
                    yield from done.frame.to_arrow().cast(schema).to_batches()

    return run


def consenting(customers: DataFrame, tier: str | None, segment: str | None) -> tuple[Any, int]:
    """``select_customers`` on Spark: (consenting rows, customers selected)."""
    from pyspark.sql import functions as F

    sel = customers
    if tier is not None:
        sel = sel.filter(F.col("tier") == tier)
    if segment is not None:
        sel = sel.filter(F.col("segment") == segment)
    selected = sel.count()
    if "marketing_consent" not in sel.columns:
        return sel.limit(0), selected
    ok = sel.filter(F.coalesce(F.col("marketing_consent").cast("boolean"), F.lit(False)))
    return ok, selected


def export_picks_spark(
    spark: SparkSession,
    bundle: Path,
    customers_uri: str,
    out: str,
    *,
    rules_text: str | None,
    rules_version: str,
    model_version: str,
    k: int = 8,
    tier: str | None = None,
    segment: str | None = None,
    batch_size: int = 2_048,
    partitions: int | None = None,
) -> ExportReport:
    """Write k picks per consenting customer as a Parquet directory at ``out`` (any Hadoop
    URI); ``rules_text=None``: the fallback-only rules."""
    from pyspark.sql import functions as F

    t0 = time.perf_counter()
    customers = read_table(spark, customers_uri)
    if "customer_id" not in customers.columns:
        raise ValueError(f"{customers_uri}: no customer_id column")
    ok, selected = consenting(customers, tier, segment)
    cols = [
        (F.col(c) if c in ok.columns else F.lit(None)).cast(kind).alias(c)
        for c, kind in zip(
            CONTEXT_COLUMNS,
            ("string", "string", "string", "double", "string", "double"),
            strict=True,
        )
    ]
    chosen = ok.select(*cols)
    if partitions:
        chosen = chosen.repartition(partitions)
    chosen = chosen.cache()
    try:
        consent = chosen.count()
        picks = chosen.mapInArrow(
            score_partition(str(Path(bundle).resolve()), rules_text, k, batch_size), OUTPUT_SCHEMA
        )
        _write_atomically(spark, picks, out)
    finally:
        chosen.unpersist()
    written = (
        spark.read.parquet(out)
        .agg(F.countDistinct("customer_id").alias("customers"), F.count(F.lit(1)).alias("rows"))
        .first()
    )
    assert written is not None
    report = ExportReport(
        customers_selected=selected,
        written=int(written["customers"]),
        rows=int(written["rows"]),
        skipped_no_consent=selected - consent,
        skipped_no_eligible_picks=consent - int(written["customers"]),
    )
    report.seconds = time.perf_counter() - t0
    report.extra = {
        "engine": "spark",
        "k": k,
        "format": "parquet",
        "out": out,
        "rules_version": rules_version,
        "model_version": model_version,
    }
    return report


def _write_atomically(spark: SparkSession, frame: DataFrame, out: str) -> None:
    """Write to a sibling temporary directory, then rename it to ``out`` (replacing an older
    export only after the new one is complete)."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    hadoop_path = jvm.org.apache.hadoop.fs.Path
    dst = hadoop_path(out)
    fs = dst.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())  # type: ignore[union-attr]
    tag = uuid.uuid4().hex[:12]
    tmp = hadoop_path(f"{out.rstrip('/')}.tmp-{tag}")
    try:
        frame.write.option("compression", "zstd").parquet(tmp.toString())
    except BaseException:
        fs.delete(tmp, True)
        raise
    old = None
    if fs.exists(dst):
        old = hadoop_path(f"{out.rstrip('/')}.old-{tag}")
        if not fs.rename(dst, old):
            fs.delete(tmp, True)
            raise OSError(f"cannot move the previous export {out} aside")
    if not fs.rename(tmp, dst):
        if old is not None:
            fs.rename(old, dst)
        fs.delete(tmp, True)
        raise OSError(f"cannot move the export into place at {out}")
    if old is not None:
        fs.delete(old, True)

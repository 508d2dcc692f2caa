"""``patron train --engine spark``: the event log and the model fits on Spark (a ``TrainEngine``).

What runs where:

- executors: every pass over the event log (the fingerprint, the per-(customer, item)
  confidence sums, the holdout sample, the baskets), MLlib ALS, and the item-item
  co-occurrence counts (a self-join of the baskets) with, above ``dense_max_items``, the
  cosine and the top-N neighbours per item;
- driver: the id maps and the interactions matrix (the bundle ships them), the confidence
  weighting (``als.confidence``, one definition), EASE's dense inverse (the Gram matrix must fit
  the driver, as it must locally), popularity per tier, evaluation and the bundle.

MLlib's implicit ALS (Hu, Koren & Volinsky 2008) weighs an observed pair by
``1 + alpha * r`` and regularises by ``regParam * n`` (n = the user's or item's observed
pairs, ALS-WR), where implicit weighs it by the confidence c itself and regularises by a
constant lambda. The mapping: ``r = c - 1`` with ``alpha = 1`` gives the same weight for every
c >= 1 (the default log weighting gives c >= alpha * log 2 > 1); c < 1 is clamped to a tiny
positive r. ``regParam = lambda / median(observed pairs per customer)`` matches the local
regularisation for the typical customer. The factors differ from implicit's (another solver,
another start); ``tests/spark`` holds the served nDCG@10 on ML-100K within 3% of the local
engine.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from scipy import sparse

from features.spark_features import read_events
from patron.spark import from_polars, to_polars
from training.als import ALSParams, ALSRecommender, confidence
from training.config import TrainConfig
from training.copurchase import CoPurchaseRecommender, ease_from_gram, keep_top_n
from training.engines import HOLDOUT_KEY
from training.interactions import Interactions, interactions_from_pairs
from training.popularity import PopularityRecommender
from training.recommender import Recommender
from training.served import ServedRecommender
from training.splits import temporal_split

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

MIN_RATING = 1e-6  # MLlib reads r <= 0 as "not observed"
CHECKPOINT_EVERY = 5  # ALS iterations between lineage cuts


class SparkEngine:
    """The event log as a Spark DataFrame; ALS and co-occurrence on the executors."""

    name = "spark"

    def __init__(self, spark: SparkSession, events_uri: str) -> None:
        from pyspark.sql import functions as F

        self.spark = spark
        self.events = read_events(spark, events_uri).cache()
        if self.events.filter(F.col("item_id").isNotNull()).limit(1).count() == 0:
            raise ValueError("events contain no item_id values; nothing to recommend from")
        self._rest: tuple[pl.DataFrame | None, DataFrame] | None = None

    def close(self) -> None:
        self.events.unpersist()

    def fingerprint(self) -> str:
        from pyspark.sql import functions as F

        row = to_polars(
            self.events.agg(
                F.count(F.lit(1)).alias("rows"),
                F.countDistinct("customer_id").alias("customers"),
                F.countDistinct("item_id").alias("items"),
                F.min(F.unix_micros("ts")).alias("ts_min"),
                F.max(F.unix_micros("ts")).alias("ts_max"),
                F.sum("quantity").alias("quantity_sum"),
                F.sum(
                    F.xxhash64("customer_id", "item_id", "ts", "quantity").cast("decimal(38,0)")
                ).alias("rows_hash"),
            )
        ).row(0, named=True)
        summary = {"engine": "spark", **{k: str(v) for k, v in row.items()}}
        return hashlib.sha256(json.dumps(summary, sort_keys=True).encode()).hexdigest()

    def rest(self, without: pl.DataFrame | None) -> DataFrame:
        if without is None:
            return self.events
        if self._rest is None or self._rest[0] is not without:
            from pyspark.sql import functions as F

            keys = from_polars(self.spark, without.select(HOLDOUT_KEY).unique())
            rest = self.events.join(F.broadcast(keys), on=HOLDOUT_KEY, how="left_anti")
            self._rest = (without, rest)
        return self._rest[1]

    def interactions(
        self,
        config: TrainConfig,
        item_ids: np.ndarray | None = None,
        customer_ids: np.ndarray | None = None,
        without: pl.DataFrame | None = None,
    ) -> Interactions:
        """``build_interactions`` with the sums on Spark."""
        from pyspark.sql import functions as F

        ev = self.rest(without)
        w = F.coalesce(F.col("quantity"), F.lit(1.0)).cast("double")
        if config.half_life_days is not None:
            if config.half_life_days <= 0:
                raise ValueError(f"half_life_days must be > 0, got {config.half_life_days}")
            newest = ev.agg(F.max(F.unix_micros("ts"))).collect()[0][0]
            # whole seconds, as polars' total_seconds
            age_s = F.floor((F.lit(newest) - F.unix_micros("ts")) / F.lit(1_000_000))
            w = w * F.pow(F.lit(0.5), (age_s / 86400.0) / F.lit(config.half_life_days))
        pairs = to_polars(
            ev.filter(F.col("item_id").isNotNull())
            .groupBy("customer_id", "item_id")
            .agg(F.sum(w).alias("w"))
        )
        counts = to_polars(
            ev.agg(
                F.count(F.lit(1)).alias("n"),
                F.sum(F.col("item_id").isNull().cast("long")).alias("no_item"),
            )
        ).row(0, named=True)
        return interactions_from_pairs(
            pairs,
            n_events=int(counts["n"]),
            events_without_item=int(counts["no_item"] or 0),
            item_ids=item_ids,
            customer_ids=customer_ids,
            log_scale=config.log_scale,
        )

    def holdout(self, eval_customers: int, test_fraction: float = 0.2) -> pl.DataFrame:
        """The ``eval_customers`` purchasers with the smallest xxhash64 of their id (then
        the id); their purchases come to the driver and are split by ``temporal_split``."""
        from pyspark.sql import functions as F

        buys = self.events.filter(
            F.col("item_id").isNotNull() & (F.coalesce(F.col("quantity"), F.lit(1.0)) > 0)
        )
        sample = (
            buys.select("customer_id")
            .distinct()
            .orderBy(F.xxhash64("customer_id"), "customer_id")
            .limit(eval_customers)
        )
        sampled = to_polars(buys.join(sample, on="customer_id", how="left_semi"))
        _, test = temporal_split(sampled, test_fraction=test_fraction)
        return test

    def fit(
        self,
        inter: Interactions,
        config: TrainConfig,
        user_tiers: np.ndarray | None,
        tiers: tuple[str, ...],
        without: pl.DataFrame | None = None,
    ) -> dict[str, Recommender]:
        als = fit_als(self.spark, inter.matrix, config.als)
        cp = self.fit_copurchase(inter, config, without)
        pop = PopularityRecommender(user_tiers, tiers).fit(inter.binary())
        served = ServedRecommender(inter, als, cp, pop, config)
        return {"als": als, "copurchase": cp, "popular": pop, "served": served}  # type: ignore[dict-item]

    def fit_copurchase(
        self, inter: Interactions, config: TrainConfig, without: pl.DataFrame | None
    ) -> CoPurchaseRecommender:
        """The co-purchase model on baskets counted on Spark: orders with two or more
        distinct items when the events carry order ids (and ``source`` allows), else each
        customer's purchases (the interactions)."""
        p = config.copurchase
        model = CoPurchaseRecommender(p)
        method = model.resolve_method(len(inter.item_ids))
        if method not in ("ease", "cosine"):
            raise ValueError(
                f"--engine spark computes the co-purchase methods ease and cosine, not {method!r}"
            )
        baskets = None if p.source == "customers" else self._order_baskets(inter, without)
        model.source_used = "orders" if baskets is not None else "customers"
        if baskets is None:
            coo = inter.matrix.tocoo()
            baskets = from_polars(
                self.spark,
                pl.DataFrame({"b": coo.row.astype(np.int64), "i": coo.col.astype(np.int32)}),
            )
        n = len(inter.item_ids)
        if method == "ease":
            model.table = keep_top_n(ease_from_gram(_gram(baskets, n), p.ease_lambda), p.top_n)
        else:
            model.table = _cosine_top_n(baskets, n, p.top_n)
        baskets.unpersist()  # the order baskets are cached while counted (no-op otherwise)
        model.method_used = method
        return model

    def _order_baskets(self, inter: Interactions, without: pl.DataFrame | None) -> Any:
        """(basket, item index) of the orders with 2+ distinct known items, or None."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        imap = from_polars(self.spark, inter.item_index().with_columns(pl.col("i").cast(pl.Int32)))
        lines = (
            self.rest(without)
            .filter(F.col("order_id").isNotNull() & F.col("item_id").isNotNull())
            .select("order_id", "item_id")
            .distinct()
            .join(F.broadcast(imap), on="item_id")
            .withColumn("n", F.count(F.lit(1)).over(Window.partitionBy("order_id")))
            .filter(F.col("n") >= 2)
            .select(F.col("order_id").alias("b"), "i")
            .cache()
        )
        if lines.limit(1).count() == 0:
            lines.unpersist()
            return None
        return lines


def _gram(baskets: Any, n: int) -> np.ndarray:
    """Dense X^T X of the binary baskets: co-occurrence counts, basket counts on the diagonal."""
    from pyspark.sql import functions as F

    a, b = baskets.alias("a"), baskets.alias("b")
    counts = to_polars(
        a.join(b, F.col("a.b") == F.col("b.b"))
        .groupBy(F.col("a.i").alias("i"), F.col("b.i").alias("j"))
        .agg(F.count(F.lit(1)).alias("c"))
    )
    g = np.zeros((n, n), dtype=np.float32)
    g[counts["i"].to_numpy(), counts["j"].to_numpy()] = counts["c"].to_numpy()
    return g


def _cosine_top_n(baskets: Any, n: int, top_n: int) -> sparse.csr_matrix:
    """Item-item cosine of the binary baskets, c_ij / sqrt(n_i n_j), best ``top_n`` per item."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    sizes = baskets.groupBy("i").agg(F.count(F.lit(1)).alias("n"))
    a, b = baskets.alias("a"), baskets.alias("b")
    co = (
        a.join(b, (F.col("a.b") == F.col("b.b")) & (F.col("a.i") != F.col("b.i")))
        .groupBy(F.col("a.i").alias("i"), F.col("b.i").alias("j"))
        .agg(F.count(F.lit(1)).alias("c"))
        .join(sizes.select(F.col("i"), F.col("n").alias("ni")), on="i")
        .join(sizes.select(F.col("i").alias("j"), F.col("n").alias("nj")), on="j")
        .withColumn("s", F.col("c") / F.sqrt(F.col("ni") * F.col("nj")))
        .withColumn("rank", F.row_number().over(Window.partitionBy("i").orderBy(F.desc("s"), "j")))
        .filter(F.col("rank") <= top_n)
        .select("i", "j", "s")
    )
    t = to_polars(co)
    m = sparse.csr_matrix(
        (t["s"].to_numpy().astype(np.float32), (t["i"].to_numpy(), t["j"].to_numpy())),
        shape=(n, n),
    )
    return keep_top_n(m, top_n)


def fit_als(spark: SparkSession, matrix: sparse.csr_matrix, p: ALSParams) -> ALSRecommender:
    """MLlib ALS(implicitPrefs=True) on the confidence ``als.confidence`` gives implicit
    (the mapping is in the module docstring); factors back as float32 in index order."""
    from pyspark.ml.recommendation import ALS

    conf = confidence(matrix, p).tocoo()
    per_row = np.diff(matrix.tocsr().indptr)
    median = float(np.median(per_row[per_row > 0])) if (per_row > 0).any() else 1.0
    ratings = pl.DataFrame(
        {
            "u": conf.row.astype(np.int32),
            "i": conf.col.astype(np.int32),
            "r": np.maximum(conf.data.astype(np.float64) - 1.0, MIN_RATING).astype(np.float32),
        }
    )
    parts = max(spark.sparkContext.defaultParallelism, 1)
    _ensure_checkpoint_dir(spark)
    als = ALS(
        rank=p.factors,
        maxIter=p.iterations,
        regParam=p.regularization / max(median, 1.0),
        alpha=1.0,
        implicitPrefs=True,
        seed=p.random_state,
        userCol="u",
        itemCol="i",
        ratingCol="r",
        numUserBlocks=parts,
        numItemBlocks=parts,
        checkpointInterval=CHECKPOINT_EVERY,
    )
    fitted = als.fit(from_polars(spark, ratings, parts))
    model = ALSRecommender(p)
    model.user_factors = _factors(fitted.userFactors, matrix.shape[0], p.factors)
    model.item_factors = _factors(fitted.itemFactors, matrix.shape[1], p.factors)
    return model


def _ensure_checkpoint_dir(spark: SparkSession) -> None:
    """ALS cuts its lineage every CHECKPOINT_EVERY iterations, which needs a checkpoint
    directory (without one a long fit fails serialising its tasks: StackOverflowError). On a
    cluster set ``spark.checkpoint.dir`` to shared storage; locally a temporary folder."""
    sc = spark.sparkContext
    if sc.getCheckpointDir() is not None:
        return
    configured = spark.conf.get("spark.checkpoint.dir", None)
    if configured:
        sc.setCheckpointDir(configured)
    elif (sc.master or "").startswith("local"):
        sc.setCheckpointDir(tempfile.mkdtemp(prefix="patron-spark-checkpoints-"))
    else:
        raise ValueError(
            "--engine spark on a cluster needs a checkpoint folder on shared storage: "
            "--spark-conf spark.checkpoint.dir=hdfs:///... (or s3a://...)"
        )


def _factors(frame: Any, n: int, rank: int) -> np.ndarray:
    """MLlib's (id, features) rows as an n x rank float32 matrix; ids it never saw are 0."""
    t = to_polars(frame)
    out = np.zeros((n, rank), dtype=np.float32)
    if t.height:
        out[t["id"].to_numpy()] = np.asarray(
            t["features"].list.to_array(rank).to_numpy(), dtype=np.float32
        )
    return out

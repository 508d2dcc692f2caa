"""Synthetic retail data: events, catalog and customers with realistic structure.

The generator is the input of every scale benchmark, so it must be fast and bounded in memory:
events are generated per chunk of customers with vectorised numpy and streamed to one Parquet
file (one row group per chunk); no per-event Python objects are ever built.

Structure (documented in docs/data.md):
- item popularity follows a power law (Zipf, exponent ``zipf_a``) inside and across categories;
- customer activity is heterogeneous (Gamma-distributed purchase rates; every customer buys
  at least once when events >= customers), some customers churn before the end;
- each customer has three favourite categories (affinity) and buys there most of the time;
- consumable categories have replenishment cycles: a share of a customer's purchases re-buys
  the same item every ~cycle days;
- order times follow weekly and yearly seasonality (weekend lift, November-December peak) and
  an hour-of-day profile; items bought together share an order_id;
- prices are log-normal per category; a few purchases are later returned (negative quantity).

Determinism: the same (customers, items, events, seed, start, end) always yields the same files
(chunks draw from ``SeedSequence(seed).spawn``; the chunk size is a constant).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from features.schemas import CATALOG, CUSTOMERS, DEFAULT_TIERS, EVENTS

# name, replenishment cycle in days (None = not consumable), median price
CATEGORIES: tuple[tuple[str, int | None, float], ...] = (
    ("grocery", 7, 6.0),
    ("coffee_tea", 21, 12.0),
    ("pet_food", 30, 25.0),
    ("beauty", 45, 18.0),
    ("household", 30, 9.0),
    ("baby", 21, 20.0),
    ("health", 40, 15.0),
    ("books", None, 14.0),
    ("electronics", None, 120.0),
    ("toys", None, 25.0),
    ("apparel", None, 35.0),
    ("home", None, 40.0),
    ("garden", None, 30.0),
    ("sports", None, 45.0),
    ("music", None, 15.0),
    ("video_games", None, 50.0),
    ("jewelry", None, 80.0),
    ("kitchen", None, 30.0),
    ("office", None, 12.0),
    ("outdoor", None, 60.0),
)
CHANNELS = ("web", "app", "store")
CHANNEL_P = (0.5, 0.3, 0.2)
DAY = 86_400
CHUNK_CUSTOMERS = 50_000  # constant: part of the determinism contract
US = 1_000_000


@dataclass(frozen=True)
class SynthConfig:
    """Sizes, seed and shape parameters of a synthetic data set."""

    customers: int = 10_000
    items: int = 2_000
    events: int = 200_000
    seed: int = 42
    start: datetime = datetime(2023, 1, 1, tzinfo=UTC)
    end: datetime = datetime(2025, 1, 1, tzinfo=UTC)
    zipf_a: float = 0.9  # item popularity ~ rank^-a
    activity_shape: float = 0.6  # Gamma shape of customer purchase rates (smaller = more skew)
    affinity: float = 0.75  # share of purchases in a customer's favourite categories
    basket_mean: float = 1.8  # mean items per order
    replenish_share: float = 0.3  # share of a consumable-loving customer's purchases re-bought
    churn_share: float = 0.3  # customers whose activity stops before the end
    return_rate: float = 0.005
    consent_share: float = 0.7
    nps_share: float = 0.3
    csat_share: float = 0.2

    def __post_init__(self) -> None:
        if self.customers < 1 or self.items < 1 or self.events < 0:
            raise ValueError("customers and items must be >= 1 and events >= 0")
        if self.end <= self.start:
            raise ValueError("end must be after start")


@dataclass(frozen=True)
class _Catalog:
    """Arrays the event generator needs (index = item number)."""

    df: pl.DataFrame
    category: np.ndarray  # int per item
    price: np.ndarray
    launch_s: np.ndarray  # launch time, epoch seconds
    cum_weight: np.ndarray  # cumulative popularity over items sorted by category
    order: np.ndarray  # item numbers sorted by category
    cat_lo: np.ndarray  # first position of each category in ``order``
    cat_hi: np.ndarray  # one past the last position
    cat_weight: np.ndarray  # total popularity of each category
    cycle_days: np.ndarray  # per category, 0 = not consumable


def _ids(prefix: str, n: int) -> pl.Series:
    width = len(str(max(n - 1, 0)))
    return pl.select(
        (pl.lit(prefix) + pl.int_range(n, eager=False).cast(pl.String).str.zfill(width)).alias("id")
    ).to_series()


def _epoch(dt: datetime) -> int:
    return int(dt.timestamp())


def _ts_series(name: str, seconds: np.ndarray) -> pl.Series:
    return (
        pl.Series(name, seconds.astype(np.int64) * US, dtype=pl.Int64)
        .cast(pl.Datetime("us"))
        .dt.replace_time_zone("UTC")
    )


def make_catalog(cfg: SynthConfig, rng: np.random.Generator) -> _Catalog:
    """Items with Zipf popularity, category sizes, log-normal prices and flags."""
    n = cfg.items
    cats = CATEGORIES[: min(len(CATEGORIES), n)]
    k = len(cats)
    # category sizes: skewed shares, at least one item each
    share = 1.0 / np.arange(1, k + 1) ** 0.7
    share = rng.permutation(share / share.sum())
    sizes = 1 + rng.multinomial(n - k, share)
    category = rng.permutation(np.repeat(np.arange(k), sizes))
    weight = 1.0 / rng.permutation(np.arange(1, n + 1)).astype(np.float64) ** cfg.zipf_a
    medians = np.array([c[2] for c in cats])
    z = rng.standard_normal(n)
    price = np.round(np.clip(medians[category] * np.exp(0.5 * z), 0.49, None), 2)
    start_s, end_s = _epoch(cfg.start), _epoch(cfg.end)
    span = end_s - start_s
    new = rng.random(n) < 0.1  # 10% launch during the window, the rest in the 3 years before
    launch_s = np.where(
        new,
        start_s + rng.random(n) * max(span - 14 * DAY, DAY),
        start_s - rng.random(n) * 3 * 365 * DAY,
    ).astype(np.int64)
    premium = z > 1.2816  # the top ~10% price within each category
    exclusive = rng.random(n) < 0.05
    tiers = np.array(DEFAULT_TIERS[1:])
    tier = tiers[rng.choice(len(tiers), size=n, p=[0.5, 0.3, 0.2])]
    order = np.argsort(category, kind="stable")
    cum = np.cumsum(weight[order])
    cat_hi = np.cumsum(sizes)
    cat_lo = cat_hi - sizes
    cat_weight = np.bincount(category, weights=weight, minlength=k)
    df = pl.DataFrame(
        {
            "item_id": _ids("I", n),
            "category": np.array([c[0] for c in cats])[category],
            "price": price,
            "in_stock": rng.random(n) < 0.95,
            "min_tier": pl.Series(np.where(exclusive, tier, ""), dtype=pl.String).replace("", None),
            "premium": premium | exclusive,
            "on_promo": rng.random(n) < 0.1,
            "launched_at": _ts_series("launched_at", launch_s),
            "margin": np.round(rng.uniform(0.1, 0.5, n), 3),
        }
    ).cast(CATALOG)  # type: ignore[arg-type]
    cycles = np.array([c[1] or 0 for c in cats], dtype=np.float64)
    return _Catalog(df, category, price, launch_s, cum, order, cat_lo, cat_hi, cat_weight, cycles)


def _pick_items(cat: _Catalog, categories: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One item per entry, drawn by popularity within the given category (vectorised)."""
    lo, hi = cat.cat_lo[categories], cat.cat_hi[categories]
    base = np.where(lo > 0, cat.cum_weight[np.maximum(lo - 1, 0)], 0.0)
    target = base + rng.random(len(categories)) * cat.cat_weight[categories]
    pos = np.searchsorted(cat.cum_weight, target, side="right")
    return cat.order[np.clip(pos, lo, hi - 1)]


def _season_cdf(cfg: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """Daily purchase intensity (weekday, holiday peak, growth) as a CDF over the window."""
    start_s = _epoch(cfg.start)
    days = max(1, int(np.ceil((_epoch(cfg.end) - start_s) / DAY)))
    day_s = start_s + np.arange(days) * DAY
    dates = day_s.astype("datetime64[s]")
    weekday = (dates.astype("datetime64[D]").astype(np.int64) + 3) % 7  # 0 = Monday
    doy = (dates - dates.astype("datetime64[Y]")).astype("timedelta64[D]").astype(np.int64)
    intensity = (
        (1.0 + 0.25 * (weekday >= 5))
        * (1.0 + 0.9 * np.exp(-(((doy - 335) / 18.0) ** 2)))  # Black Friday to Christmas
        * (1.0 - 0.15 * np.exp(-(((doy - 200) / 25.0) ** 2)))  # summer lull
        * np.linspace(1.0, 1.3, days)  # growing business
    )
    cdf = np.concatenate([[0.0], np.cumsum(intensity)])
    return day_s, cdf / cdf[-1]


# relative purchase intensity per hour of day (UTC), evening peak
_HOURS = [1, 0.5, 0.3, 0.2, 0.2, 0.4, 1, 2, 3, 4, 4.5, 5, 5.5, 5, 4.5, 4.5, 5, 5.5, 6.5, 7.5, 7.5]
_HOUR_P = np.array([*_HOURS, 6, 4, 2]) / sum([*_HOURS, 6, 4, 2])


def _draw_times(
    lo_s: np.ndarray,
    hi_s: np.ndarray,
    season: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
) -> np.ndarray:
    """Timestamps in [lo, hi) per entry following the seasonal CDF and the hour profile."""
    day_s, cdf = season
    start = day_s[0]
    days = len(day_s)

    def frac(t: np.ndarray) -> np.ndarray:
        d = np.clip((t - start) / DAY, 0, days)
        i = np.minimum(d.astype(np.int64), days - 1)
        return cdf[i] + (cdf[i + 1] - cdf[i]) * (d - i)

    v = frac(lo_s) + rng.random(len(lo_s)) * (frac(hi_s) - frac(lo_s))
    i = np.clip(np.searchsorted(cdf, v, side="right") - 1, 0, days - 1)
    hour = rng.choice(24, size=len(lo_s), p=_HOUR_P)
    t = day_s[i] + hour * 3600 + rng.integers(0, 3600, len(lo_s))
    return np.clip(t, lo_s, np.maximum(hi_s - 1, lo_s)).astype(np.int64)


def _within(counts: np.ndarray) -> np.ndarray:
    """0..n-1 for each group of the given sizes, concatenated."""
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total, dtype=np.int64) - starts


def _repeated(key: np.ndarray) -> np.ndarray:
    """True where the key already occurred earlier in the array."""
    seen = np.ones(len(key), dtype=bool)
    seen[np.unique(key, return_index=True)[1]] = False
    return seen


def make_customers(cfg: SynthConfig, rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray]:
    """Customers table and their purchase rates (activity weights)."""
    n = cfg.customers
    rate = rng.gamma(cfg.activity_shape, 1.0, n)
    start_s, end_s = _epoch(cfg.start), _epoch(cfg.end)
    span = end_s - start_s
    # signed up up to two years before the window, at the latest 30 days before its end
    signup = (start_s - 2 * 365 * DAY + rng.random(n) * (2 * 365 * DAY + 0.95 * span)).astype(
        np.int64
    )
    signup = np.minimum(signup, end_s - 30 * DAY)
    z = (np.log(rate + 1e-9) - np.log(rate + 1e-9).mean()) / (np.log(rate + 1e-9).std() + 1e-9)
    nps = np.clip(np.round(7.0 + 1.2 * z + rng.normal(0, 1.8, n)), 0, 10)
    csat = np.clip(np.round(3.8 + 0.4 * z + rng.normal(0, 0.8, n)), 1, 5)
    df = pl.DataFrame(
        {
            "customer_id": _ids("C", n),
            "marketing_consent": rng.random(n) < cfg.consent_share,
            "nps": np.where(rng.random(n) < cfg.nps_share, nps, np.nan),
            "csat": np.where(rng.random(n) < cfg.csat_share, csat, np.nan),
            "signup_at": _ts_series("signup_at", signup),
            "tier_floor": pl.Series([None] * n, dtype=pl.String),
        }
    ).with_columns(pl.col("nps", "csat").fill_nan(None))
    return df.cast(CUSTOMERS), rate  # type: ignore[arg-type]


def _event_counts(cfg: SynthConfig, rate: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = cfg.customers
    p = rate / rate.sum()
    if cfg.events >= n:
        return 1 + rng.multinomial(cfg.events - n, p)
    return rng.multinomial(cfg.events, p)


def _chunk_events(
    cfg: SynthConfig,
    cat: _Catalog,
    customers: pl.DataFrame,
    first: int,
    counts: np.ndarray,
    order_offset: int,
    season: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
) -> tuple[pl.DataFrame, int]:
    """Events of customers ``first .. first+len(counts)-1``; returns (events, orders used)."""
    c = len(counts)
    start_s, end_s = _epoch(cfg.start), _epoch(cfg.end)
    signup = customers["signup_at"].dt.epoch("s").to_numpy()[first : first + c]
    t0 = np.maximum(signup, start_s)
    churn = rng.random(c) < cfg.churn_share
    t1 = np.where(churn, t0 + (end_s - t0) * rng.uniform(0.2, 0.9, c), end_s).astype(np.int64)
    t1 = np.maximum(t1, t0 + DAY)
    k = len(cat.cat_weight)
    fav = rng.choice(k, size=(c, 3), p=cat.cat_weight / cat.cat_weight.sum())

    # replenishment streams: one consumable item re-bought every ~cycle days
    cycle = cat.cycle_days[fav[:, 0]] * rng.lognormal(0.0, 0.2, c)
    has_stream = (cycle > 0) & (counts >= 3)
    stream_start = t0 + rng.random(c) * np.where(has_stream, cycle, 0) * DAY
    fit = np.where(has_stream, (t1 - stream_start) // np.maximum(cycle * DAY, 1) + 1, 0)
    n_stream = np.where(
        has_stream,
        np.minimum(np.round(counts * cfg.replenish_share), np.maximum(fit, 0)),
        0,
    ).astype(np.int64)
    stream_item = _pick_items(cat, fav[:, 0], rng)
    stream_start = np.maximum(stream_start, cat.launch_s[stream_item])
    n_basket = counts - n_stream

    # basket events: grouped into orders, category by affinity, item by popularity
    cust = np.repeat(np.arange(c), n_basket)
    pos = _within(n_basket)
    new_order = (pos == 0) | (rng.random(len(cust)) < 1.0 / cfg.basket_mean)
    order_local = np.cumsum(new_order) - 1
    n_orders = int(new_order.sum())
    order_cust = cust[new_order]
    order_ts = _draw_times(t0[order_cust], t1[order_cust], season, rng)
    order_channel = rng.choice(len(CHANNELS), size=n_orders, p=CHANNEL_P)
    slot = rng.choice(3, size=len(cust), p=[0.6, 0.3, 0.1])
    category = np.where(
        rng.random(len(cust)) < cfg.affinity,
        fav[cust, slot],
        rng.choice(k, size=len(cust), p=cat.cat_weight / cat.cat_weight.sum()),
    )
    item = _pick_items(cat, category, rng)
    ts = order_ts[order_local]
    n_items = len(cat.price)
    durable = cat.cycle_days[category] == 0
    for _ in range(5):
        # redraw: items bought before their launch, twice in one order, or a durable item a
        # customer already owns (durables are rarely re-bought; consumables are, on a cycle)
        bad = (
            (ts < cat.launch_s[item])
            | _repeated(order_local * n_items + item)
            | (durable & _repeated(cust * n_items + item))
        )
        redo = np.flatnonzero(bad)
        if redo.size == 0:
            break
        item[redo] = _pick_items(cat, category[redo], rng)
    # leftover early items move their whole order to the latest launch among its items
    np.maximum.at(order_ts, order_local, cat.launch_s[item])
    ts = order_ts[order_local]
    # a rare leftover repeat within an order becomes its own later order
    again = np.flatnonzero(_repeated(order_local * n_items + item))
    order_id = order_offset + order_local
    order_id[again] = order_offset + n_orders + np.arange(again.size)
    ts[again] = np.minimum(ts[again] + rng.integers(3600, 3 * DAY, again.size), end_s - 1)
    n_orders += again.size
    channel = order_channel[order_local]

    # stream events: their own orders
    s_cust = np.repeat(np.arange(c), n_stream)
    j = _within(n_stream)
    s_ts = stream_start[s_cust] + (j + rng.normal(0, 0.1, len(j))) * cycle[s_cust] * DAY
    s_ts = np.clip(s_ts, t0[s_cust], end_s - 1).astype(np.int64)
    s_order = order_offset + n_orders + np.arange(len(s_cust))
    s_channel = rng.choice(len(CHANNELS), size=len(s_cust), p=CHANNEL_P)

    cust = np.concatenate([cust, s_cust])
    item = np.concatenate([item, stream_item[s_cust]])
    ts = np.concatenate([ts, s_ts])
    order_id = np.concatenate([order_id, s_order])
    channel = np.concatenate([channel, s_channel])
    n = len(cust)
    quantity = 1.0 + (rng.random(n) < 0.15) * (1.0 + (rng.random(n) < 0.2))
    quantity += (cat.cycle_days[cat.category[item]] > 0) * (rng.random(n) < 0.1)

    # returns: a purchase later sent back (same customer, item, order; negative quantity)
    srt = np.lexsort((ts, cust))
    cust, item, ts, order_id = cust[srt], item[srt], ts[srt], order_id[srt]
    channel, quantity = channel[srt], quantity[srt]
    ret = np.flatnonzero(rng.random(n) < cfg.return_rate)
    ret = ret[(ret > 0) & (cust[ret] == cust[np.maximum(ret - 1, 0)])]
    src = ret - 1
    item[ret], order_id[ret], channel[ret] = item[src], order_id[src], channel[src]
    quantity[ret] = -quantity[src]
    ts[ret] = np.minimum(ts[src] + rng.integers(2 * DAY, 30 * DAY, len(ret)), end_s - 1)

    df = pl.DataFrame(
        {
            "customer_id": customers["customer_id"].gather(first + cust),
            "item_id": cat.df["item_id"].gather(item),
            "ts": _ts_series("ts", ts),
            "quantity": quantity,
            "unit_price": cat.price[item],
            "order_id": pl.Series("order_id", order_id, dtype=pl.Int64),
            "channel": pl.Series("channel", channel, dtype=pl.UInt8),
        }
    ).with_columns(
        (pl.lit("O") + pl.col("order_id").cast(pl.String)).alias("order_id"),
        pl.col("channel").replace_strict(dict(enumerate(CHANNELS)), return_dtype=pl.String),
    )
    return df.cast(EVENTS).select(list(EVENTS)), n_orders + len(s_cust)  # type: ignore[arg-type]


def generate(
    cfg: SynthConfig,
    out_dir: Path,
    progress: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Write events.parquet, catalog.parquet and customers.parquet to ``out_dir``.

    ``progress`` is called with the number of events written after each chunk.
    Returns a summary (counts and paths).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = np.random.SeedSequence(cfg.seed)
    cat_seq, cust_seq, count_seq, chunk_seq = root.spawn(4)
    cat = make_catalog(cfg, np.random.default_rng(cat_seq))
    customers, rate = make_customers(cfg, np.random.default_rng(cust_seq))
    counts = _event_counts(cfg, rate, np.random.default_rng(count_seq))
    season = _season_cdf(cfg)
    cat.df.write_parquet(out_dir / "catalog.parquet")
    customers.write_parquet(out_dir / "customers.parquet")

    events_path = out_dir / "events.parquet"
    tmp = out_dir / ".events.parquet.tmp"
    n_chunks = max(1, -(-cfg.customers // CHUNK_CUSTOMERS))
    seqs = chunk_seq.spawn(n_chunks)
    written = orders = 0
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    try:
        for i, lo in enumerate(range(0, cfg.customers, CHUNK_CUSTOMERS)):
            part = counts[lo : lo + CHUNK_CUSTOMERS]
            rng = np.random.default_rng(seqs[i])
            df, used = _chunk_events(cfg, cat, customers, lo, part, orders, season, rng)
            orders += used
            table = df.to_arrow()
            if writer is None:
                schema = table.schema
                writer = pq.ParquetWriter(tmp, schema, compression="zstd")
            writer.write_table(table.cast(schema))
            written += df.height
            if progress is not None:
                progress(df.height)
        if writer is None:  # no customers at all cannot happen (customers >= 1)
            raise RuntimeError("no events generated")
        writer.close()
        writer = None
        tmp.replace(events_path)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    return {
        "events": written,
        "customers": cfg.customers,
        "items": cfg.items,
        "orders": orders,
        "seed": cfg.seed,
        "out": str(out_dir),
    }


def iter_chunk_sizes(cfg: SynthConfig) -> Iterator[int]:
    """Customer counts per chunk (for progress reporting)."""
    for lo in range(0, cfg.customers, CHUNK_CUSTOMERS):
        yield min(CHUNK_CUSTOMERS, cfg.customers - lo)

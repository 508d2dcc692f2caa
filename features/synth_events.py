"""Synthetic purchase events, generated per chunk of customers (``features.synth``).

Orders follow weekly and yearly seasonality and an hour-of-day profile; categories follow each
customer's favourites, items their popularity; consumables are re-bought on a cycle; a few
purchases are returned. Everything is vectorised numpy over the chunk.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from features.schemas import EVENTS
from features.synth_config import CHANNEL_P, CHANNELS, DAY, SynthConfig
from features.synth_tables import Catalog, epoch, ts_series


def _pick_items(cat: Catalog, categories: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One item per entry, drawn by popularity within the given category (vectorised)."""
    lo, hi = cat.cat_lo[categories], cat.cat_hi[categories]
    base = np.where(lo > 0, cat.cum_weight[np.maximum(lo - 1, 0)], 0.0)
    target = base + rng.random(len(categories)) * cat.cat_weight[categories]
    pos = np.searchsorted(cat.cum_weight, target, side="right")
    return cat.order[np.clip(pos, lo, hi - 1)]


def season_cdf(cfg: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """Daily purchase intensity (weekday, holiday peak, growth) as a CDF over the window."""
    start_s = epoch(cfg.start)
    days = max(1, int(np.ceil((epoch(cfg.end) - start_s) / DAY)))
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


def event_counts(cfg: SynthConfig, rate: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = cfg.customers
    p = rate / rate.sum()
    if cfg.events >= n:
        return 1 + rng.multinomial(cfg.events - n, p)
    return rng.multinomial(cfg.events, p)


def chunk_events(
    cfg: SynthConfig,
    cat: Catalog,
    customers: pl.DataFrame,
    first: int,
    counts: np.ndarray,
    order_offset: int,
    season: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
) -> tuple[pl.DataFrame, int]:
    """Events of customers ``first .. first+len(counts)-1``; returns (events, orders used)."""
    c = len(counts)
    start_s, end_s = epoch(cfg.start), epoch(cfg.end)
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
            "ts": ts_series("ts", ts),
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

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

This module drives the generation and writes the files; the parts live in
``features.synth_config`` (``SynthConfig``, categories), ``features.synth_tables`` (catalog
and customers) and ``features.synth_events`` (events per chunk).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from features.synth_config import CATEGORIES, CHANNEL_P, CHANNELS, DAY, US, SynthConfig
from features.synth_events import chunk_events, event_counts, season_cdf
from features.synth_tables import make_catalog, make_customers

__all__ = [
    "CATEGORIES",
    "CHANNELS",
    "CHANNEL_P",
    "CHUNK_CUSTOMERS",
    "DAY",
    "US",
    "SynthConfig",
    "generate",
    "iter_chunk_sizes",
    "make_catalog",
    "make_customers",
]

CHUNK_CUSTOMERS = 50_000  # constant: part of the determinism contract


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
    counts = event_counts(cfg, rate, np.random.default_rng(count_seq))
    season = season_cdf(cfg)
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
            df, used = chunk_events(cfg, cat, customers, lo, part, orders, season, rng)
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

"""Scale benchmark of ``patron data synth``: wall time and peak memory against a baseline.

The baseline, measured in the same run, writes the same number of event rows with the same
schema and the same chunking, but every value is uniform random (no structure): it is the
floor set by building the columns and writing Parquet on this machine. The ratio says what
the realistic structure costs on top of that floor. Each job runs in its own process so its
peak RSS is its own.

    python benchmarks/synth_scale.py --customers 1000000 --items 100000 --events 20000000

Prints one JSON line with both measurements and the ratios (last line of stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIME_LIMIT_S = 180.0  # the bound for 20M events / 1M customers / 100k items
RSS_LIMIT_GIB = 8.0


def _child_synth(args: argparse.Namespace) -> dict[str, float | int]:
    from features.synth import SynthConfig, generate

    cfg = SynthConfig(
        customers=args.customers, items=args.items, events=args.events, seed=args.seed
    )
    t = time.perf_counter()
    result = generate(cfg, Path(args.out))
    return {"seconds": time.perf_counter() - t, "events": result["events"]}


def _child_baseline(args: argparse.Namespace) -> dict[str, float | int]:
    """Uniform random rows in the EVENTS schema, same chunk sizes, one Parquet file."""
    import numpy as np
    import polars as pl
    import pyarrow.parquet as pq

    from features.schemas import EVENTS
    from features.synth import CHUNK_CUSTOMERS

    t = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    cust_ids = pl.select(
        (pl.lit("C") + pl.int_range(args.customers).cast(pl.String).str.zfill(7)).alias("c")
    ).to_series()
    item_ids = pl.select(
        (pl.lit("I") + pl.int_range(args.items).cast(pl.String).str.zfill(6)).alias("i")
    ).to_series()
    chunks = max(1, -(-args.customers // CHUNK_CUSTOMERS))
    per = -(-args.events // chunks)
    out = Path(args.out) / "events.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    written = 0
    lo_s, hi_s = 1_672_531_200, 1_735_689_600
    while written < args.events:
        n = min(per, args.events - written)
        df = pl.DataFrame(
            {
                "customer_id": cust_ids.gather(rng.integers(0, args.customers, n)),
                "item_id": item_ids.gather(rng.integers(0, args.items, n)),
                "ts": pl.Series(rng.integers(lo_s, hi_s, n) * 1_000_000)
                .cast(pl.Datetime("us"))
                .dt.replace_time_zone("UTC"),
                "quantity": rng.integers(1, 4, n).astype(np.float64),
                "unit_price": np.round(rng.uniform(1, 100, n), 2),
                "order_id": pl.Series(rng.integers(0, args.events, n)),
                "channel": pl.Series(rng.integers(0, 3, n)),
            }
        ).with_columns(
            (pl.lit("O") + pl.col("order_id").cast(pl.String)).alias("order_id"),
            pl.col("channel").cast(pl.String),
        )
        table = df.cast(EVENTS).to_arrow()  # type: ignore[arg-type]
        if writer is None:
            writer = pq.ParquetWriter(out, table.schema, compression="zstd")
        writer.write_table(table)
        written += n
    assert writer is not None
    writer.close()
    return {"seconds": time.perf_counter() - t, "events": written}


def _run_child(kind: str, args: argparse.Namespace, out: Path) -> dict[str, float | int]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--customers",
        str(args.customers),
        "--items",
        str(args.items),
        "--events",
        str(args.events),
        "--seed",
        str(args.seed),
        "--out",
        str(out),
    ]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed: {proc.stderr.strip().splitlines()[-1:]}")
    result: dict[str, float | int] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--customers", type=int, default=100_000)
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--events", type=int, default=2_000_000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--repeats", type=int, default=1, help="runs of each job; medians reported")
    p.add_argument("--out", type=Path, default=None, help="scratch folder (default: a tmp dir)")
    p.add_argument("--child", choices=["synth", "baseline"], help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        fn = _child_synth if args.child == "synth" else _child_baseline
        result = fn(args)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        print(json.dumps({**result, "peak_rss_gib": rss / 2**20}))
        return

    import statistics

    runs: dict[str, list[dict[str, float | int]]] = {"synth": [], "baseline": []}
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        for r in range(args.repeats):
            for kind in ("baseline", "synth"):
                out = Path(tmp) / f"{kind}{r}"
                runs[kind].append(_run_child(kind, args, out))
                size = (out / "events.parquet").stat().st_size
                runs[kind][-1]["events_file_mib"] = size / 2**20
                print(f"{kind} run {r}: {runs[kind][-1]}", file=sys.stderr)

    def med(kind: str, key: str) -> float:
        return float(statistics.median(float(x[key]) for x in runs[kind]))

    synth_s, base_s = med("synth", "seconds"), med("baseline", "seconds")
    synth_rss, base_rss = med("synth", "peak_rss_gib"), med("baseline", "peak_rss_gib")
    print(
        json.dumps(
            {
                "customers": args.customers,
                "items": args.items,
                "events": args.events,
                "repeats": args.repeats,
                "cpus": os.cpu_count(),
                "load_avg_1m": os.getloadavg()[0],
                "synth_seconds": round(synth_s, 2),
                "synth_peak_rss_gib": round(synth_rss, 3),
                "synth_events_per_s": round(args.events / synth_s),
                "baseline_seconds": round(base_s, 2),
                "baseline_peak_rss_gib": round(base_rss, 3),
                "time_ratio_vs_baseline": round(synth_s / base_s, 2),
                "rss_ratio_vs_baseline": round(synth_rss / base_rss, 2),
                "synth_process_wall_s": round(med("synth", "process_wall_s"), 2),
                "within_time_bound": med("synth", "process_wall_s") < TIME_LIMIT_S,
                "within_memory_bound": synth_rss < RSS_LIMIT_GIB,
            }
        )
    )


if __name__ == "__main__":
    main()

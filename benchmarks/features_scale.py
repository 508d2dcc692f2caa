"""Scale benchmark for loyalty features.

1. CLV: 1M and 10M synthetic customers drawn from the BG/NBD generative process (numpy); the
   BG/NBD and Pareto/NBD fits on compressed (x, t_x, T) rows in a fresh process: time (target
   at 10M < 10 s), peak RSS (< 2 GiB) and BG/NBD parameter recovery, against baselines in the
   same run: one likelihood evaluation on the raw rows, and up to 1M the whole BG/NBD fit on
   them.
2. Build: ``patron features build`` on synthetic events (default 20M events, 1M customers);
   wall time (target < 120 s) and peak RSS (target < 8 GiB), against a baseline in the same
   run: one polars scan + group_by of the same Parquet (the floor any build must pay).

Usage: python benchmarks/features_scale.py [--customers 1000000] [--events-per-customer 20]
       [--clv-customers 1000000,10000000] [--skip-build] [--skip-clv] [--workdir DIR]
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
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from features import clv  # noqa: E402

TRUE = {"r": 0.6, "alpha": 5.0, "a": 0.8, "b": 2.5}


def simulate_bgnbd(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, t_x, T in weeks on a daily grid (T = 1..546 days), vectorised over customers."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(TRUE["r"], 1.0 / TRUE["alpha"], n)  # purchases per week
    p = rng.beta(TRUE["a"], TRUE["b"], n)
    T_days = rng.integers(1, 547, n)
    T = T_days / 7.0
    x = np.zeros(n)
    t_x = np.zeros(n)
    t = np.zeros(n)
    alive = np.ones(n, dtype=bool)
    while alive.any():
        idx = np.flatnonzero(alive)
        t[idx] += rng.exponential(1.0 / lam[idx])
        ok = t[idx] <= T[idx]
        buy = idx[ok]
        x[buy] += 1
        t_x[buy] = np.floor(t[buy] * 7.0) / 7.0  # purchase day
        alive[idx[~ok]] = False
        die = rng.random(buy.size) < p[buy]
        alive[buy[die]] = False
    return x, t_x, T


_CHILD_FIT = """
import json, sys, time
import numpy as np
from features import clv, clv_pareto
def hwm_kib():  # this process's peak RSS (ru_maxrss would carry the parent's over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
before = hwm_kib()
d = np.load(sys.argv[1])
x, t_x, T = d["x"], d["t_x"], d["T"]
out = {}
for name, fit in (("bgnbd", clv.fit_bgnbd), ("pareto_nbd", clv_pareto.fit_pareto_nbd)):
    t0 = time.perf_counter()
    out[name] = fit(x, t_x, T).as_dict()
    out[name + "_fit_s"] = time.perf_counter() - t0
out["peak_rss_mib"] = hwm_kib() / 1024
out["rss_after_imports_mib"] = before / 1024
print(json.dumps(out))
"""


def _per_eval_s(fn: object, *cols: np.ndarray) -> float:
    """Median seconds of one log-likelihood evaluation."""
    laps = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn(*cols)  # type: ignore[operator]
        laps.append(time.perf_counter() - t0)
    return float(np.median(laps))


def bench_clv(n: int, workdir: Path) -> dict[str, object]:
    """Both purchase models fitted on ``n`` simulated customers in a fresh process (its peak
    RSS is the fit's memory: loading the rows, compressing them, fitting both), against the
    same run's baseline: one likelihood evaluation on the raw rows vs the compressed ones
    (and, up to 1M customers, the whole BG/NBD fit on raw rows)."""
    from features import clv_pareto

    t0 = time.perf_counter()
    x, t_x, T = simulate_bgnbd(n)
    gen_s = time.perf_counter() - t0
    rows = workdir / f"clv-{n}.npz"
    np.savez(rows, x=x, t_x=t_x, T=T)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD_FIT, str(rows)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    fits = json.loads(child.stdout.strip().splitlines()[-1])
    (ux, ut, uT), _w = clv.compress(x, t_x, T)
    bg_p = np.array([fits["bgnbd"][k] for k in ("r", "alpha", "a", "b")])
    pn_p = [fits["pareto_nbd"][k] for k in ("r", "alpha", "s", "beta")]
    evals = {
        "bgnbd": (
            _per_eval_s(lambda *c: clv.bgnbd_log_likelihood_terms(bg_p, *c), x, t_x, T),
            _per_eval_s(lambda *c: clv.bgnbd_log_likelihood_terms(bg_p, *c), ux, ut, uT),
        ),
        "pareto_nbd": (
            _per_eval_s(lambda *c: clv_pareto.log_likelihood_terms(pn_p, *c), x, t_x, T),
            _per_eval_s(lambda *c: clv_pareto.log_likelihood_terms(pn_p, *c), ux, ut, uT),
        ),
    }
    got = fits["bgnbd"]
    rel = {k: abs(got[k] - v) / v for k, v in TRUE.items()}
    out: dict[str, object] = {
        "customers": n,
        "unique_rows": int(ux.size),
        "simulate_s": round(gen_s, 2),
        "bgnbd_fit_s": round(fits["bgnbd_fit_s"], 2),
        "pareto_nbd_fit_s": round(fits["pareto_nbd_fit_s"], 2),
        "fit_target_s": 10 if n >= 10_000_000 else 30,
        "fit_process_peak_rss_mib": round(fits["peak_rss_mib"]),
        "fit_process_rss_after_imports_mib": round(fits["rss_after_imports_mib"]),
        "peak_target_mib": 2048,
        "likelihood_eval_raw_vs_compressed_s": {
            k: [round(a, 4), round(b, 5), round(a / b, 1)] for k, (a, b) in evals.items()
        },
        "true": TRUE,
        "fitted_bgnbd": {k: round(float(got[k]), 4) for k in TRUE},
        "max_rel_error_bgnbd": round(max(rel.values()), 4),
        "pareto_nbd": {k: round(float(v), 4) for k, v in fits["pareto_nbd"].items()},
    }
    if n <= 1_000_000:
        t0 = time.perf_counter()
        clv.fit_bgnbd(x, t_x, T, weights=np.ones(n))  # baseline: the same fit on raw rows
        base_s = time.perf_counter() - t0
        out["baseline_uncompressed_bgnbd_fit_s"] = round(base_s, 2)
        out["speedup_vs_baseline"] = round(base_s / fits["bgnbd_fit_s"], 2)
    return out


def make_events(path: Path, customers: int, per_customer: int, seed: int = 2) -> int:
    """Synthetic events with numpy: Zipf items, Poisson counts, two years of timestamps."""
    rng = np.random.default_rng(seed)
    counts = 1 + rng.poisson(per_customer - 1, customers)
    n = int(counts.sum())
    cust = np.repeat(np.arange(customers), counts)
    start = datetime(2023, 1, 1, tzinfo=UTC).timestamp()
    first = rng.uniform(0, 600, customers)[cust]
    ts = start + (first + rng.random(n) * (730 - first)) * 86_400
    items = rng.zipf(1.3, n) % 50_000
    qty = np.where(rng.random(n) < 0.01, -1.0, rng.integers(1, 4, n).astype(float))
    # list price times a per-customer spend level (customers differ in what they pay)
    level = rng.gamma(4.0, 0.25, customers)[cust]
    price = np.round(rng.gamma(3.0, 7.0, 50_000)[items] * level, 2)
    df = pl.DataFrame(
        {
            "customer_id": pl.Series(cust).cast(pl.String),
            "item_id": pl.Series(items).cast(pl.String),
            "ts": pl.Series((ts * 1e6).astype(np.int64)).cast(pl.Datetime("us", "UTC")),
            "quantity": qty,
            "unit_price": price,
        }
    ).with_columns(order_id=pl.lit(None, dtype=pl.String), channel=pl.lit(None, dtype=pl.String))
    df.write_parquet(path)
    pl.DataFrame(
        {
            "item_id": pl.Series(np.arange(50_000)).cast(pl.String),
            "category": pl.Series(np.arange(50_000) % 40).cast(pl.String),
            "price": np.round(rng.gamma(3.0, 7.0, 50_000), 2),
            "in_stock": rng.random(50_000) < 0.95,
        }
    ).write_parquet(path.with_name("catalog.parquet"))
    return n


def bench_build(workdir: Path, customers: int, per_customer: int) -> dict[str, object]:
    ev = workdir / "events.parquet"
    t0 = time.perf_counter()
    n = make_events(ev, customers, per_customer)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pl.scan_parquet(ev).group_by("customer_id").agg(
        pl.len(), pl.col("ts").max(), (pl.col("quantity") * pl.col("unit_price")).sum()
    ).collect()
    base_s = time.perf_counter() - t0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "patron",
        "features",
        "build",
        "--events",
        str(ev),
        "--catalog",
        str(workdir / "catalog.parquet"),
        "--out",
        str(workdir / "out"),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    build_s = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"build failed: {proc.stderr[-2000:]}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_kib = usage.ru_maxrss
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "events": n,
        "customers": result["customers"],
        "generate_s": round(gen_s, 1),
        "build_s": round(build_s, 1),
        "build_target_s": 120,
        "build_cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "load_avg_1m_after": round(os.getloadavg()[0], 1),
        "peak_rss_gib": round(peak_kib / 2**20, 2),
        "rss_target_gib": 8,
        "baseline_scan_groupby_s": round(base_s, 2),
        "ratio_build_to_baseline": round(build_s / base_s, 1),
        "segments": result.get("segments"),
        "tiers": result.get("tiers"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--events-per-customer", type=int, default=20)
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--skip-clv", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument(
        "--clv-customers", default="1000000,10000000", help="CLV fit sizes, comma-separated"
    )
    args = ap.parse_args()
    out: dict[str, object] = {}
    if args.workdir is not None:  # the scratch folders go inside it; create it if new
        args.workdir.mkdir(parents=True, exist_ok=True)
    if not args.skip_clv:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            sizes = [int(v) for v in args.clv_customers.split(",") if v.strip()]
            out["clv"] = [bench_clv(n, Path(tmp)) for n in sizes]
        print(json.dumps(out["clv"]), file=sys.stderr)
    if not args.skip_build:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            out["build"] = bench_build(Path(tmp), args.customers, args.events_per_customer)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""Scale benchmark of ``patron train`` against a bare ``implicit`` ALS fit of the same matrix.

1. synthetic data with ``features.synth`` (``patron data synth``), unless ``--data`` points at
   an existing output folder (events.parquet, catalog.parquet);
2. baseline, in its own process: read the events, build the same confidence matrix (not timed)
   and time only ``AlternatingLeastSquares(factors, iterations).fit`` on it;
3. the whole ``patron train --register`` (interactions, validation, ALS, co-purchase, popularity,
   bundle, FAISS index, MLflow registration) as a subprocess, wall time and peak RSS;

4. with ``--engine spark``: the same ``patron train --engine spark`` on Spark in local mode
   (``--spark-master``, default ``local[2]``) in the same run, wall time and peak memory of
   the whole process tree (the JVM included), and the per-event cost of each engine;

then prints them and the ratio (target: train <= 2x bare ALS, < 10 min, < 12 GiB) as one JSON
line. Every run uses OPENBLAS_NUM_THREADS=1 and every core for ALS. One machine measures
Spark's overhead, not a cluster's speed: docs/spark.md turns the per-event cost into an
estimate for 1B events on N executors.

    python benchmarks/train_scale.py --customers 1000000 --items 100000 --events 20000000
    python benchmarks/train_scale.py --engine spark --spark-conf spark.driver.memory=12g
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
TIME_LIMIT_S = 600.0
RSS_LIMIT_GIB = 12.0
RATIO_LIMIT = 2.0


def _env() -> dict[str, str]:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _child_baseline(args: argparse.Namespace) -> dict[str, float]:
    import polars as pl
    from implicit.cpu.als import AlternatingLeastSquares

    from training.als import ALSParams, confidence
    from training.config import TrainConfig
    from training.interactions import build_interactions

    cfg = TrainConfig()
    events = pl.scan_parquet(Path(args.data) / "events.parquet")
    inter = build_interactions(events)
    p = ALSParams(**{**vars(cfg.als), "factors": args.factors, "iterations": args.iterations})
    x = confidence(inter.matrix, p)
    model = AlternatingLeastSquares(
        factors=p.factors,
        regularization=p.regularization,
        alpha=1.0,
        iterations=p.iterations,
        random_state=p.random_state,
        num_threads=0,
    )
    t = time.perf_counter()
    model.fit(x, show_progress=False)
    return {"seconds": time.perf_counter() - t, "nnz": float(x.nnz)}


def _peak_rss_gib_children() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / (1024**2)


def _timed_tree(
    cmd: list[str], env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run ``cmd``; (result, wall seconds, peak RSS in GiB of its whole process tree, sampled
    every 0.2 s: a JVM the command starts counts too)."""
    import threading

    import psutil

    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.wait(0.2):
            try:
                tree = [root, *root.children(recursive=True)]
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                continue

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = proc.communicate()
    done.set()
    th.join()
    wall = time.perf_counter() - t
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), wall, peak[0] / 1024**3


def _run_child(args: argparse.Namespace, role: str) -> dict[str, float]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        role,
        "--data",
        args.data,
        "--factors",
        str(args.factors),
        "--iterations",
        str(args.iterations),
    ]
    out = subprocess.run(cmd, env=_env(), check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--events", type=int, default=20_000_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=15)
    ap.add_argument("--data", default=None, help="Existing synth output folder to reuse.")
    ap.add_argument(
        "--neighbours", type=int, default=64, help="patron train --neighbours (0 = none)"
    )
    ap.add_argument(
        "--engine",
        choices=("local", "spark"),
        default="local",
        help="spark: also train with --engine spark in the same run",
    )
    ap.add_argument("--spark-master", default="local[2]")
    ap.add_argument("--spark-conf", action="append", default=[], help="KEY=VALUE (repeatable)")
    ap.add_argument(
        "--tune-minutes",
        type=float,
        default=None,
        help="train with --tune --budget-minutes M (the search, then the final fit)",
    )
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "baseline":
        print(json.dumps(_child_baseline(args)))
        return

    work = Path(tempfile.mkdtemp(prefix="patron-train-scale-"))
    result: dict[str, object] = {
        "customers": args.customers,
        "items": args.items,
        "events": args.events,
        "factors": args.factors,
        "iterations": args.iterations,
        "neighbours": args.neighbours,
        "cpus": os.cpu_count(),
    }
    if args.data is None:
        from features.synth import SynthConfig, generate

        args.data = str(work / "synth")
        t = time.perf_counter()
        generate(
            SynthConfig(
                customers=args.customers, items=args.items, events=args.events, seed=args.seed
            ),
            Path(args.data),
        )
        result["synth_seconds"] = round(time.perf_counter() - t, 1)
    data = Path(args.data)

    base = _run_child(args, "baseline")
    result["bare_als_seconds"] = round(base["seconds"], 1)
    result["matrix_nnz"] = int(base["nnz"])
    rss_before = _peak_rss_gib_children()

    config = work / "config.json"
    config.write_text(json.dumps({"als": {"factors": args.factors, "iterations": args.iterations}}))
    env = _env()
    env["PATRON_WORK_DIR"] = str(work / "var")
    env.pop("PATRON_MLFLOW_TRACKING_URI", None)
    patron = [sys.executable, "-m", "patron"]
    cmd = [
        *patron,
        "train",
        "--events",
        str(data / "events.parquet"),
        "--catalog",
        str(data / "catalog.parquet"),
        "--config",
        str(config),
        "--register",
        "--neighbours",
        str(args.neighbours),
        "--out",
        str(work / "bundle"),
    ]
    if args.tune_minutes is not None:
        cmd[-2:-2] = ["--tune", "--budget-minutes", str(args.tune_minutes)]
        result["tune_budget_minutes"] = args.tune_minutes
    proc, train_s, tree_gib = _timed_tree(cmd, env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"patron train failed with exit code {proc.returncode}")
    trained = json.loads(proc.stdout.strip().splitlines()[-1])
    rss = _peak_rss_gib_children()
    result.update(
        {
            "train_seconds": round(train_s, 1),
            "train_stage_seconds": trained.get("timings"),
            "train_peak_rss_gib": round(rss, 2),
            "train_peak_tree_rss_gib": round(tree_gib, 2),
            "local_us_per_event": round(train_s / args.events * 1e6, 2),
            "peak_rss_note": "max over child processes" if rss <= rss_before else "train",
            "ratio_train_vs_bare_als": round(train_s / base["seconds"], 2),
            "val_ndcg@10": trained["metrics"].get("val_ndcg@10"),
            "val_popular_ndcg@10": trained["metrics"].get("val_popular_ndcg@10"),
            "model_version": trained.get("model_version"),
        }
    )
    if args.tune_minutes is not None:
        params = json.loads((work / "bundle" / "manifest.json").read_text())["params"]
        result["tune"] = {k: v for k, v in params.items() if k.startswith("tune.")}
    result["within_limits"] = bool(
        train_s <= TIME_LIMIT_S
        and rss <= RSS_LIMIT_GIB
        and train_s / base["seconds"] <= RATIO_LIMIT
    )
    if args.engine == "spark":
        spark_cmd = [*cmd[:-2], "--out", str(work / "bundle-spark"), "--engine", "spark"]
        spark_cmd += ["--spark-master", args.spark_master]
        for kv in args.spark_conf:
            spark_cmd += ["--spark-conf", kv]
        proc, spark_s, spark_gib = _timed_tree(spark_cmd, env)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:])
            raise SystemExit(f"patron train --engine spark failed with exit code {proc.returncode}")
        sp = json.loads(proc.stdout.strip().splitlines()[-1])
        result["spark"] = {
            "master": args.spark_master,
            "conf": args.spark_conf,
            "seconds": round(spark_s, 1),
            "stage_seconds": sp.get("timings"),
            "peak_tree_rss_gib": round(spark_gib, 2),
            "us_per_event": round(spark_s / args.events * 1e6, 2),
            "ratio_vs_local_train": round(spark_s / train_s, 2),
            "val_ndcg@10": sp["metrics"].get("val_ndcg@10"),
            "val_popular_ndcg@10": sp["metrics"].get("val_popular_ndcg@10"),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

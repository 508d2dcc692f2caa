"""``patron train --tune`` on the ML-100K protocol (a): tuned on validation folds of the training
part only, measured on the test part, next to the untuned defaults in the same run.

For each split seed (42, 1-5 by default): write the protocol's training part as events, run
``patron train --tune --budget-minutes B`` and ``patron train`` (defaults), then ``patron
recommend --no-rules`` on both bundles (the scoring library the API serves with;
tests/training/test_served_ml100k.py checks the API answers the same lists) and score nDCG@10
on the test part (Microsoft Recommenders definition: 1/log2(rank+1) gains, ideal over
min(k, |test items|)). Prints one JSON line: per seed, mean, sd.

    python benchmarks/tune_ml100k.py --budget-minutes 2 [--seeds 42,1,2,3,4,5]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent


def ndcg_at_k(recs: Path, test: pl.DataFrame, k: int = 10) -> float:
    truth: dict[str, set[str]] = defaultdict(set)
    for u, i in test.select(
        pl.col("customer_id").cast(pl.String), pl.col("item_id").cast(pl.String)
    ).iter_rows():
        truth[u].add(i)
    ranked: dict[str, list[str]] = defaultdict(list)
    with recs.open() as fh:
        for row in csv.DictReader(fh):
            ranked[row["customer_id"]].append(row["item_id"])
    scores = []
    for u, items in truth.items():
        got = ranked.get(u, [])[:k]
        dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(got) if i in items)
        ideal = sum(1 / math.log2(r + 2) for r in range(min(k, len(items))))
        scores.append(dcg / ideal)
    return float(np.mean(scores))


def _patron(args: list[str], env: dict[str, str]) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "patron", *args], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-3000:])
        raise SystemExit(f"patron {args[0]} failed ({out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="42,1,2,3,4,5")
    ap.add_argument("--budget-minutes", type=float, default=2.0)
    args = ap.parse_args()
    from patron.settings import get_settings
    from training.evaluate import ml100k_rows
    from training.splits import stratified_split

    rows = ml100k_rows(get_settings().data_dir)
    work = Path(tempfile.mkdtemp(prefix="patron-tune-ml100k-"))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PATRON_WORK_DIR=str(work / "var"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("PATRON_MLFLOW_TRACKING_URI", None)
    per_seed: dict[str, dict[str, object]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        train, test = stratified_split(rows, ratio=0.75, filter_by="item", seed=seed)
        events = work / f"train-{seed}.parquet"
        train.select(
            pl.col("customer_id").cast(pl.String),
            pl.col("item_id").cast(pl.String),
            pl.from_epoch("ts", time_unit="s").dt.replace_time_zone("UTC").alias("ts"),
        ).write_parquet(events)
        result: dict[str, object] = {}
        for name, extra in (
            ("default", []),
            ("tuned", ["--tune", "--budget-minutes", str(args.budget_minutes)]),
        ):
            bundle = work / f"bundle-{seed}-{name}"
            trained = _patron(
                ["train", "--events", str(events), "--no-eval", "--out", str(bundle), *extra], env
            )
            recs = work / f"recs-{seed}-{name}.csv"
            _patron(
                [
                    "recommend",
                    "--bundle",
                    str(bundle),
                    "--k",
                    "10",
                    "--no-rules",
                    "--out",
                    str(recs),
                ],
                env,
            )
            result[name] = round(ndcg_at_k(recs, test), 4)
            if name == "tuned":
                params = json.loads((bundle / "manifest.json").read_text())["params"]
                result["tune_trials"] = params.get("tune.trials")
                result["tune_best_val_ndcg"] = params.get("tune.best_val_ndcg_at_10")
            del trained
        per_seed[str(seed)] = result
        sys.stderr.write(f"seed {seed}: {result}\n")
    tuned = [float(v["tuned"]) for v in per_seed.values()]  # type: ignore[arg-type]
    default = [float(v["default"]) for v in per_seed.values()]  # type: ignore[arg-type]
    print(
        json.dumps(
            {
                "budget_minutes": args.budget_minutes,
                "seeds": per_seed,
                "tuned_mean": round(float(np.mean(tuned)), 4),
                "tuned_sd": round(float(np.std(tuned)), 4),
                "tuned_min": min(tuned),
                "default_mean": round(float(np.mean(default)), 4),
                "default_sd": round(float(np.std(default)), 4),
            }
        )
    )


if __name__ == "__main__":
    main()

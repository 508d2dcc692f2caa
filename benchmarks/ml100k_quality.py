"""Quality benchmark on ML-100K: protocol (a) (Microsoft Recommenders split, seeds 42 and 1-5)
and protocol (b) (temporal, last 20% per customer), every model next to the popularity
baseline measured in the same run, plus the published best row (BiVAE) for reference.

    python benchmarks/ml100k_quality.py [--temporal-config docs/results/tune_ml100k_temporal.json]

Prints a table on stderr and one JSON line on stdout. Hyperparameters are the documented
defaults (training/config.py), chosen by ``patron tune`` on validation data only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from features.adapters.ml100k import read_ml100k
from patron.settings import get_settings
from training.config import TrainConfig
from training.evaluate import protocol_ml100k, protocol_temporal

BIVAE = {"map": 0.146126, "ndcg@10": 0.475077, "precision@10": 0.411771, "recall@10": 0.219145}
METRICS = ("map", "ndcg@10", "precision@10", "recall@10", "coverage")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="42,1,2,3,4,5")
    ap.add_argument("--temporal-config", type=Path, default=None)
    args = ap.parse_args()
    data_dir = get_settings().data_dir
    seeds = tuple(int(s) for s in args.seeds.split(","))
    a = protocol_ml100k(data_dir, TrainConfig(), seeds=seeds)
    events, _ = read_ml100k(data_dir / "ml-100k")
    b = protocol_temporal(events, TrainConfig.from_file(args.temporal_config))

    err = sys.stderr
    err.write(
        f"protocol (a), seed {seeds[0]}:\n{'model':<12}" + "".join(f"{m:>14}" for m in METRICS)
    )
    err.write("\n")
    first = a["seeds"][str(seeds[0])]
    for model in ("popular", "als", "copurchase", "served"):
        err.write(f"{model:<12}" + "".join(f"{first[model][m]:>14.4f}" for m in METRICS) + "\n")
    err.write(
        f"{'BiVAE (pub.)':<12}" + "".join(f"{BIVAE.get(m, float('nan')):>14.4f}" for m in METRICS)
    )
    err.write(
        f"\nserved nDCG@10 over seeds {seeds}: mean {a['spread']['served']['ndcg@10']['mean']:.4f}"
        f" sd {a['spread']['served']['ndcg@10']['std']:.4f}"
        f" min {a['spread']['served']['ndcg@10']['min']:.4f}"
        f" max {a['spread']['served']['ndcg@10']['max']:.4f}\n"
    )
    err.write("protocol (b), temporal:\n")
    for model, vals in b["models"].items():
        err.write(f"{model:<12}" + "".join(f"{vals[m]:>14.4f}" for m in METRICS) + "\n")
    err.write(f"served / popular nDCG@10 = {b['served_vs_popular_ndcg']:.2f}\n")
    print(
        json.dumps(
            {
                "protocol_a": {"seed": seeds[0], "models": first, "spread": a["spread"]},
                "protocol_a_blend_vs_bivae_ndcg": first["served"]["ndcg@10"] / BIVAE["ndcg@10"],
                "protocol_b": b,
            }
        )
    )


if __name__ == "__main__":
    main()

"""Time and peak memory of exact EASE (training/copurchase.py) by catalog size, each size in
its own process, against the memory-derived limit (``ease_max_items``).

Baskets: 200,000 synthetic customers with 4M purchases over a Zipf(1.3) item popularity.

    python benchmarks/ease_scale.py --items 10000,20000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _child(n: int) -> dict[str, float]:
    import numpy as np
    from scipy import sparse

    from training.copurchase import ease_weights, keep_top_n

    rng = np.random.default_rng(0)
    rows, nnz = 200_000, 4_000_000
    x = sparse.csr_matrix(
        (np.ones(nnz, np.float32), (rng.integers(0, rows, nnz), rng.zipf(1.3, nnz) % n)),
        shape=(rows, n),
    )
    x.data[:] = 1.0
    t = time.perf_counter()
    b = ease_weights(x, 600.0)
    t1 = time.perf_counter()
    keep_top_n(b, 200)
    t2 = time.perf_counter()
    return {
        "items": n,
        "ease_seconds": round(t1 - t, 1),
        "top_n_seconds": round(t2 - t1, 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", default="10000,20000")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(_child(args.child)))
        return
    from training.copurchase import ease_max_items

    env = dict(os.environ, OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS", "1"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    runs = []
    for n in (int(v) for v in args.items.split(",")):
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(n)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(
        json.dumps(
            {
                "limit_at_4_gib": ease_max_items(4.0),
                "blas_threads": env["OPENBLAS_NUM_THREADS"],
                "runs": runs,
            }
        )
    )


if __name__ == "__main__":
    main()

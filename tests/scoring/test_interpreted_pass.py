"""The scoring pass run as plain Python (``NUMBA_DISABLE_JIT=1``), where numpy checks every
index: compiled code does not, so a scratch array too small for what the pass writes into
it corrupts memory silently instead of failing. The interpreted pass must run without an
``IndexError`` and give the compiled pass's answers bit for bit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from patron.scoring import ScoreRequest, ScoringModel, score_batch
from tests.serving.helpers import make_bundle_data

ROOT = Path(__file__).resolve().parents[2]

# small depths: rows then hold many more candidates than they keep (the histogram path of
# patron/scoring/select.py), with fewer candidate slots than histogram buckets
_SCRIPT = """
import json, sys
import numpy as np
from tests.scoring.test_interpreted_pass import batch_for
print(json.dumps(batch_for(int(sys.argv[1]))))
"""


def batch_for(depth: int) -> dict[str, list[list[float]]]:
    """Every row of a varied batch (unknown and known customers, real-time purchases,
    exclusions, an item on screen, a category) scored by the pass of this process."""
    data = make_bundle_data(n_items=400, n_customers=40, f=8, seed=5)
    model = ScoringModel.from_bundle(data)
    rng = np.random.default_rng(1)
    pos = np.arange(-3, 40)
    n = len(pos)
    req = ScoreRequest.build(
        model,
        pos,
        recent=[rng.choice(400, int(rng.integers(0, 4)), replace=False) for _ in pos],
        exclude=[rng.choice(400, int(rng.integers(0, 3)), replace=False).tolist() for _ in pos],
        context=np.where(np.arange(n) % 5 == 0, np.arange(n) % 400, -1).astype(np.int32),
        category=np.where(np.arange(n) % 7 == 3, 1, -1).astype(np.int32),
    )
    c = score_batch(model, req, depth=depth)
    return {
        name: getattr(c, name).tolist() for name in ("item_idx", "score", "source", "anchor_idx")
    }


def _interpreted(depth: int) -> dict[str, list[list[float]]]:
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", "OPENBLAS_NUM_THREADS": "1"}
    # the table's Fibonacci hash wraps around uint64 on purpose: numpy warns of it
    cmd = [sys.executable, "-W", "ignore::RuntimeWarning", "-c", _SCRIPT, str(depth)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_the_interpreted_pass_stays_in_bounds_and_equals_the_compiled_one() -> None:
    for depth in (3, 40):
        want = batch_for(depth)
        got = _interpreted(depth)
        assert sum(v >= 0 for row in want["item_idx"] for v in row) > 0
        for name in want:
            assert got[name] == want[name], (depth, name)

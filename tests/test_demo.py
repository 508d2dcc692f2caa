"""`make demo` end to end: import, validate, CLV, features, publish, train, register, promote,
serve, recommend, ingest a purchase — on embedded defaults, in a temporary work dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path, data_dir: Path) -> None:
    venv_bin = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATRON_WORK_DIR": str(tmp_path / "demo"),
        "PATRON": str(venv_bin / "patron"),
        "PY": sys.executable,
    }
    env.pop("PATRON_MLFLOW_TRACKING_URI", None)
    env.pop("PATRON_REDIS_URL", None)
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    validate = next(x for x in lines if "quarantined" in x)
    assert validate["read"] == validate["accepted"] + validate["quarantined"] == 100_000
    promoted = next(x for x in lines if "promoted" in x)
    assert promoted["promoted"] is True and promoted["champion"] == "1"
    recs = [x for x in lines if "variant" in x]
    assert len(recs) >= 3
    assert all(not r["degraded"] and r["model_version"] == "1" and r["items"] for r in recs)
    assert all(item["reasons"] for r in recs for item in r["items"])
    summary = lines[-1]
    assert summary["demo"] == "ok"
    assert summary["purchased"] not in summary["recommended_after_purchase"]

"""Every command given bad input (issue: hardening, item 6): one line on stderr, exit code 2
(bad input) or 3 (a dependency unavailable), never a traceback. Real processes: what a user
types, against an empty work folder (a local MLflow store with nothing registered)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OPENBLAS_NUM_THREADS": "1",
        "PATRON_WORK_DIR": str(tmp_path / "work"),
        "PATRON_MLFLOW_TRACKING_URI": "",
        "PATRON_BUNDLE": "",
        "PATRON_ENV": "dev",  # admin routes without a key: the champion is what is missing
    }
    env = {k: v for k, v in env.items() if v != ""}
    return subprocess.run(
        [sys.executable, "-m", "patron", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


CASES = [
    (("picks", "export", "--bundle", "nope", "--features", "f", "--out", "p.parquet"), 2, "nope"),
    (("picks", "export", "--bundle", "nope", "--out", "p.parquet"), 2, "--features"),
    (("picks", "export", "--out", "p.parquet", "--format", "xml"), 2, "format"),
    (("models", "promote", "--version", "999"), 2, "version=999) not found"),
    (("models", "rollback"), 2, "not found"),
    (("rules", "check", "missing.yaml"), 2, "missing.yaml"),
    (("recommend", "--bundle", "nope", "--no-rules", "--out", "r.csv"), 2, "nope"),
    (("features", "publish", "--features", "nope"), 2, "nope"),
    (("data", "validate", "nope.csv"), 2, "nope.csv"),
    (("serve", "--log-level", "LOUD"), 2, "--log-level"),
    (("ab", "report", "--since", "yesterday"), 2, "--since 'yesterday'"),
    (("ab", "report", "--since", "2026-12-05", "--until", "2026-12-01"), 2, "is before"),
    (("ab", "report", "--metric", "clicks"), 2, "--metric 'clicks'"),
    (("ab", "report", "--redis-url", "redis://127.0.0.1:1"), 2, "cannot read the A/B counters"),
    (("serve", "--port", "1"), 3, "nothing to serve"),  # no champion in the empty store
]


@pytest.mark.parametrize(("args", "code", "says"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_one_line_and_its_exit_code(
    tmp_path: Path, args: tuple[str, ...], code: int, says: str
) -> None:
    done = _run(tmp_path, *args)
    err = done.stderr.strip()
    assert done.returncode == code, (done.returncode, err)
    assert "Traceback" not in err, err
    last = err.splitlines()[-1]
    assert says.lower() in last.lower(), last


@pytest.mark.parametrize(
    ("variable", "value"),
    [("PATRON_REDIS_NAMESPACE", "{tag}"), ("PATRON_REDIS_CLUSTER", "maybe")],
)
def test_a_bad_setting_is_one_line_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    done = _run(tmp_path, "features", "publish", "--features", "nope")
    err = done.stderr.strip()
    assert done.returncode == 2 and "Traceback" not in err, err
    assert len(err.splitlines()) == 1 and f"{variable}={value!r}" in err, err

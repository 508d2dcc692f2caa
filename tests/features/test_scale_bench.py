"""benchmarks/features_scale.py's command line (the benchmark itself is not run here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks import features_scale


def test_workdir_is_created_when_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    workdir = tmp_path / "not" / "yet"
    used: list[Path] = []

    def fake_build(wd: Path, customers: int, per_customer: int) -> dict[str, object]:
        assert wd.is_dir()
        used.append(wd)
        return {"customers": customers}

    monkeypatch.setattr(features_scale, "bench_build", fake_build)
    argv = ["features_scale.py", "--skip-clv", "--customers", "7", "--workdir", str(workdir)]
    monkeypatch.setattr(sys, "argv", argv)
    features_scale.main()
    assert workdir.is_dir() and [p.parent for p in used] == [workdir]
    assert json.loads(capsys.readouterr().out) == {"build": {"customers": 7}}

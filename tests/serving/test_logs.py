"""The server's log lines (issue: hardening, item 6): time, level and logger on every line,
JSON on request, no FAISS probe noise, admin changes logged (``--log-level``: checked with the
other commands' bad input, tests/test_cli_bad_input.py)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from serving.rules.loader import DEFAULT_RULES_FILE
from tests.serving.conftest import ADMIN_KEY

ROOT = Path(__file__).resolve().parents[2]
_EMIT = """
import logging.config, sys
from serving.logs import log_config
logging.config.dictConfig(log_config("info", sys.argv[1]))
logging.getLogger("faiss.loader").info("Loading faiss with AVX512 support.")
logging.getLogger("uvicorn.error").info("Started server process")
logging.getLogger("patron.serving").warning("online store unavailable")
logging.getLogger("patron.serving").debug("not at info")
"""


def _lines(fmt: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _EMIT, fmt],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr.splitlines()


def test_text_lines_carry_time_level_and_logger() -> None:
    lines = _lines("text")
    assert len(lines) == 2, lines  # no faiss probe, no debug line
    assert lines[0].split(" ", 3)[2:] == ["INFO", "uvicorn.error Started server process"]
    assert " WARNING patron.serving online store unavailable" in lines[1]
    assert lines[1][:4].isdigit()  # the date first


def test_json_lines_are_objects() -> None:
    rows = [json.loads(line) for line in _lines("json")]
    assert [(r["level"], r["logger"], r["message"]) for r in rows] == [
        ("INFO", "uvicorn.error", "Started server process"),
        ("WARNING", "patron.serving", "online store unavailable"),
    ]
    assert all(r["ts"].endswith("+00:00") for r in rows)


def test_head_on_health_routes(client: TestClient) -> None:
    assert client.head("/healthz").status_code == 200
    assert client.head("/readyz").status_code == 200


def test_admin_changes_are_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="patron.serving")
    key = {"X-API-Key": ADMIN_KEY}
    before = client.get("/admin/rules", headers=key).json()["version"]
    rules = {**yaml.safe_load(DEFAULT_RULES_FILE.read_text()), "version": "logged-1"}
    assert client.put("/admin/rules", json=rules, headers=key).status_code == 200
    assert (
        client.put("/admin/rules", json={"version": 3, "boosts": 1}, headers=key).status_code == 422
    )
    assert client.post("/admin/reload", headers=key).status_code == 200
    msgs = [m for m in caplog.messages if m.startswith(("rules ", "PUT /admin", "champion "))]
    assert msgs[0].startswith(f"rules {before} -> logged-1+")
    assert "(set by admin on " in msgs[0]
    assert (
        msgs[1]
        == "PUT /admin/rules refused; rules "
        + client.get("/admin/rules", headers=key).json()["version"]
        + " kept"
    )
    assert msgs[2].startswith("champion ") and "unchanged (reload by admin on " in msgs[2]

"""Reliability suite fixtures and the summary table printed at the end of the pytest run.

Each scenario records one row (requests, outcomes by class, faults injected, data lost)
through the ``report`` fixture; ``pytest_terminal_summary`` prints them as a table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest


@dataclass
class ScenarioRow:
    scenario: str
    requests: int
    outcomes: dict[str, int]
    faults: str
    data_lost: int
    notes: str = ""
    passed: bool = False


ROWS: list[ScenarioRow] = []
_BY_NODE: dict[str, list[ScenarioRow]] = {}

Report = Callable[..., ScenarioRow]


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Report:
    """Record a row of the summary table: report(scenario, requests, outcomes, faults, lost)."""

    def record(
        scenario: str,
        requests: int,
        outcomes: dict[str, int],
        faults: str,
        data_lost: int = 0,
        notes: str = "",
    ) -> ScenarioRow:
        row = ScenarioRow(scenario, requests, dict(outcomes), faults, data_lost, notes)
        ROWS.append(row)
        _BY_NODE.setdefault(request.node.nodeid, []).append(row)
        return row

    return record


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    rep = yield
    if rep.when == "call":
        for row in _BY_NODE.get(item.nodeid, []):
            row.passed = rep.passed
    return rep


def _fmt_outcomes(outcomes: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in outcomes.items()) or "-"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    if not ROWS:
        return
    head = ("scenario", "requests/reads", "outcomes", "faults injected", "data lost", "result")
    rows = [
        (
            r.scenario,
            str(r.requests),
            _fmt_outcomes(r.outcomes),
            r.faults,
            str(r.data_lost),
            "pass" if r.passed else "FAIL",
        )
        for r in ROWS
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    tr = terminalreporter
    tr.write_sep("=", "reliability summary")
    line = " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))
    tr.write_line(line)
    tr.write_line("-+-".join("-" * w for w in widths))
    for row in rows:
        tr.write_line(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    total_lost = sum(r.data_lost for r in ROWS)
    total_req = sum(r.requests for r in ROWS)
    tr.write_line(f"total: {total_req} requests/reads checked, data lost = {total_lost}")
    for r in ROWS:
        if r.notes:
            tr.write_line(f"  {r.scenario}: {r.notes}")

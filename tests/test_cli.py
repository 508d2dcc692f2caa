"""The CLI surface: every job is a sub-command with its own --help."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from patron.cli import app

runner = CliRunner()

COMMANDS = [
    ["data"],
    ["features"],
    ["clv"],
    ["train"],
    ["evaluate"],
    ["tune"],
    ["recommend"],
    ["models"],
    ["serve"],
    ["rules"],
    ["picks"],
    ["ab"],
]


def test_root_help_lists_every_job() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in COMMANDS:
        assert cmd[0] in result.output


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c))
def test_each_command_has_help(cmd: list[str]) -> None:
    result = runner.invoke(app, [*cmd, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output

"""``patron rules check`` and ``patron picks export``."""

from __future__ import annotations

from pathlib import Path

import typer

from patron.cliutil import command, emit

rules_app = typer.Typer(no_args_is_help=True)
picks_app = typer.Typer(no_args_is_help=True)


@rules_app.command("check")
@command
def rules_check(
    file: Path = typer.Argument(..., help="Rule file to validate (YAML)."),
) -> None:
    """Validate a rule file; print its summary, or name the rule, field and problem (exit 2)."""
    from serving.rules.loader import load_rules

    loaded = load_rules(file)
    emit({"valid": True, **loaded.summary()})


@rules_app.command("show")
@command
def rules_show() -> None:
    """Summary of the active rule file (PATRON_RULES_FILE or config/rules.yaml)."""
    from serving.rules.loader import load_rules

    emit({"valid": True, **load_rules().summary()})

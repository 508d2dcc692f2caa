"""``patron serve``, ``patron rules`` and ``patron picks`` commands."""

from __future__ import annotations

import typer

from patron.cliutil import UserError, command

rules_app = typer.Typer(no_args_is_help=True)
picks_app = typer.Typer(no_args_is_help=True)


@command
def serve() -> None:
    raise UserError("not implemented yet")

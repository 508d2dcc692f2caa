"""``patron train``, ``evaluate``, ``tune``, ``recommend`` and ``models`` commands."""

from __future__ import annotations

import typer

from patron.cliutil import UserError, command

models_app = typer.Typer(no_args_is_help=True)


@command
def train() -> None:
    raise UserError("not implemented yet")


@command
def evaluate() -> None:
    raise UserError("not implemented yet")


@command
def tune() -> None:
    raise UserError("not implemented yet")


@command
def recommend() -> None:
    raise UserError("not implemented yet")

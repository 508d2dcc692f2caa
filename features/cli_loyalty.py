"""``patron features`` and ``patron clv`` commands."""

from __future__ import annotations

import typer

features_app = typer.Typer(no_args_is_help=True)
clv_app = typer.Typer(no_args_is_help=True)

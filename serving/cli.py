"""``patron serve``, ``patron rules`` and ``patron picks`` commands."""

from __future__ import annotations

from patron.cliutil import UserError, command
from serving.cli_rules import picks_app, rules_app

__all__ = ["picks_app", "rules_app", "serve"]


@command
def serve() -> None:
    raise UserError("not implemented yet")

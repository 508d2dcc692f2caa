"""Mounts the ``patron data`` (cli_data.py), ``features`` and ``clv`` (cli_loyalty.py) apps."""

from __future__ import annotations

from features.cli_data import data_app
from features.cli_loyalty import clv_app, features_app

__all__ = ["clv_app", "data_app", "features_app"]

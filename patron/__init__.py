"""Patron: loyalty-aware recommendations. Shared plumbing (settings, CLI, bundle contract)."""

__version__ = "0.1.0"

"""Adapters from public data sets to Patron's input contracts (features/schemas.py)."""

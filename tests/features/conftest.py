"""Fixtures of the feature tests (the CDNOW sample lives in tests/conftest.py)."""

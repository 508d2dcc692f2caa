"""Fixtures of the feature tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def cdnow_sample() -> Path:
    from tests.conftest import shared_data_dir

    p = shared_data_dir() / "cdnow" / "CDNOW_sample.txt"
    if not p.is_file():
        pytest.skip(f"CDNOW sample not found at {p}")
    return p

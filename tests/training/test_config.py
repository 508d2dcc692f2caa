"""Training configuration defaults."""

from __future__ import annotations

from patron.bundle import DEFAULT_BLEND, Manifest
from training.config import TrainConfig


def test_one_default_blend() -> None:
    """Training's default and a manifest's default are the same single definition."""
    assert TrainConfig().blend == Manifest().blend == dict(DEFAULT_BLEND)
    assert DEFAULT_BLEND == {"als": 0.5, "copurchase": 1.0, "popular": 0.0}


def test_default_blend_is_copied_not_shared() -> None:
    a, b = TrainConfig(), Manifest()
    a.blend["als"] = 9.0
    b.blend["popular"] = 9.0
    assert TrainConfig().blend == Manifest().blend == dict(DEFAULT_BLEND)
    assert TrainConfig.from_dict({"blend": {"popular": 0.2}}).blend == {
        **DEFAULT_BLEND,
        "popular": 0.2,
    }

"""Configuration and constants of the synthetic data generator (``features.synth``).

``SynthConfig`` holds the sizes, seed and shape parameters of a data set; ``CATEGORIES`` the
product categories with their replenishment cycles and median prices.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

# name, replenishment cycle in days (None = not consumable), median price
CATEGORIES: tuple[tuple[str, int | None, float], ...] = (
    ("grocery", 7, 6.0),
    ("coffee_tea", 21, 12.0),
    ("pet_food", 30, 25.0),
    ("beauty", 45, 18.0),
    ("household", 30, 9.0),
    ("baby", 21, 20.0),
    ("health", 40, 15.0),
    ("books", None, 14.0),
    ("electronics", None, 120.0),
    ("toys", None, 25.0),
    ("apparel", None, 35.0),
    ("home", None, 40.0),
    ("garden", None, 30.0),
    ("sports", None, 45.0),
    ("music", None, 15.0),
    ("video_games", None, 50.0),
    ("jewelry", None, 80.0),
    ("kitchen", None, 30.0),
    ("office", None, 12.0),
    ("outdoor", None, 60.0),
)
CHANNELS = ("web", "app", "store")
CHANNEL_P = (0.5, 0.3, 0.2)
DAY = 86_400
US = 1_000_000


@dataclass(frozen=True)
class SynthConfig:
    """Sizes, seed and shape parameters of a synthetic data set."""

    customers: int = 10_000
    items: int = 2_000
    events: int = 200_000
    seed: int = 42
    start: datetime = datetime(2023, 1, 1, tzinfo=UTC)
    end: datetime = datetime(2025, 1, 1, tzinfo=UTC)
    zipf_a: float = 0.9  # item popularity ~ rank^-a
    activity_shape: float = 0.6  # Gamma shape of customer purchase rates (smaller = more skew)
    affinity: float = 0.75  # share of purchases in a customer's favourite categories
    basket_mean: float = 1.8  # mean items per order
    replenish_share: float = 0.3  # share of a consumable-loving customer's purchases re-bought
    churn_share: float = 0.3  # customers whose activity stops before the end
    return_rate: float = 0.005
    consent_share: float = 0.7
    nps_share: float = 0.3
    csat_share: float = 0.2

    def __post_init__(self) -> None:
        if self.customers < 1 or self.items < 1 or self.events < 0:
            raise ValueError("customers and items must be >= 1 and events >= 0")
        if self.end <= self.start:
            raise ValueError("end must be after start")

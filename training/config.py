"""Training configuration and its documented defaults.

The defaults below were chosen by ``patron tune`` on validation splits carved out of the
ML-100K protocol-(a) *training* part (stratified by item, ratio 0.9, seeds 43, 44, 45; mean
nDCG@10 over the three folds), never on the test part:

    patron tune --protocol ml100k --out var/tune.json

Chosen (best validation nDCG@10): EASE lambda 600 (0.1826), ALS 16 factors / reg 5 / alpha 3 /
log confidence (0.1795), blend als 0.5 + copurchase 1.0 + popular 0.0 (0.1873).

(see docs/training.md for the trial table; that search was a staged grid, since replaced by
``training/search.py``). On your own data: ``patron train --tune``, or ``patron tune --events E``
and pass the resulting JSON to ``patron train --config``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from patron.bundle import DEFAULT_BLEND
from training.als import ALSParams
from training.copurchase import CoPurchaseParams


@dataclass
class TrainConfig:
    """Everything that shapes a trained model (logged as MLflow params)."""

    als: ALSParams = field(
        default_factory=lambda: ALSParams(
            factors=16, regularization=5.0, alpha=3.0, iterations=15, weighting="log"
        )
    )
    copurchase: CoPurchaseParams = field(
        default_factory=lambda: CoPurchaseParams(method="auto", ease_lambda=600.0, top_n=200)
    )
    blend: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_BLEND))
    half_life_days: float | None = None
    log_scale: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def flat(self) -> dict[str, Any]:
        """Flat ``section.key`` -> value mapping for MLflow params."""
        out: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if isinstance(value, dict):
                out.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        base = cls()
        return cls(
            als=ALSParams(**{**asdict(base.als), **data.get("als", {})}),
            copurchase=CoPurchaseParams(
                **{**asdict(base.copurchase), **data.get("copurchase", {})}
            ),
            blend={**base.blend, **data.get("blend", {})},
            half_life_days=data.get("half_life_days", base.half_life_days),
            log_scale=bool(data.get("log_scale", base.log_scale)),
        )

    @classmethod
    def from_file(cls, path: Path | None) -> TrainConfig:
        if path is None:
            return cls()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: config file not found")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data.get("config", data))

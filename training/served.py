"""The served recommender for offline evaluation: fitted models -> bundle -> scoring library.

``patron evaluate``, ``patron tune`` and the training run's validation score what the API
serves: the fitted ALS, item-item and popularity models are assembled into the same in-memory
bundle training writes, and customers are ranked by ``patron.scoring`` (the API's scoring
library) with rules off. There is no second blend formula here.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import polars as pl
from scipy import sparse

from patron.scoring import ScoringModel
from patron.scoring import recommend as score_top_k
from training.als import ALSRecommender
from training.config import TrainConfig
from training.copurchase import CoPurchaseRecommender
from training.interactions import Interactions
from training.popularity import PopularityRecommender


class ServedRecommender:
    """Ranks a fold's customers by the scoring library over its fitted models."""

    name = "served"

    def __init__(
        self,
        inter: Interactions,
        als: ALSRecommender,
        copurchase: CoPurchaseRecommender,
        popular: PopularityRecommender,
        config: TrainConfig,
        catalog: pl.DataFrame | None = None,
    ) -> None:
        self.inter, self.config, self.catalog = inter, config, catalog
        self.sources = (als, copurchase, popular)

    @cached_property
    def scoring(self) -> ScoringModel:
        from training.bundle_builder import build_bundle_data

        als, cp, pop = self.sources
        data = build_bundle_data(self.inter, als, cp, pop, self.config, catalog=self.catalog)
        return ScoringModel.from_bundle(data)

    def recommend(
        self,
        user_idx: np.ndarray,
        user_items: sparse.csr_matrix,
        n: int = 10,
        filter_already_bought: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` for customers ``user_idx``; their history is the fold's training part
        (``user_items`` must be it: the served model knows no other)."""
        if user_items.shape != self.inter.shape:
            raise ValueError("the served recommender scores its own training part only")
        if not filter_already_bought:
            raise ValueError("the served recommender never recommends training purchases")
        return score_top_k(self.scoring, np.asarray(user_idx, np.int64), n)

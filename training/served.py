"""The served recommender for offline evaluation: fitted models -> bundle -> scoring library.

``patron evaluate``, ``patron tune`` and the training run's validation score what the API
serves: the fitted ALS, item-item and popularity models are assembled into the same in-memory
bundle training writes, and customers are ranked by ``patron.scoring`` (the API's scoring
library) with rules off. There is no second blend formula here.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy import sparse

from patron.bundle import BundleData
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
    def data(self) -> BundleData:
        """The in-memory bundle of the fitted models (what training would write)."""
        from training.bundle_builder import build_bundle_data

        als, cp, pop = self.sources
        return build_bundle_data(self.inter, als, cp, pop, self.config, catalog=self.catalog)

    @cached_property
    def scoring(self) -> ScoringModel:
        return ScoringModel.from_bundle(self.data)

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


class ServedWithRules:
    """``ServedRecommender``'s candidates through business rules, exactly as the API answers a
    customer without online features (lowest tier, nothing bought since training): serving's
    ``recommend_batch``, imported here at evaluation time only."""

    name = "served_rules"

    def __init__(self, served: ServedRecommender, rules_file: Path | None = None) -> None:
        self.served, self.rules_file = served, rules_file

    @cached_property
    def _model(self) -> Any:
        from serving.model import build_model

        return build_model(self.served.data)  # the served recommender's bundle, not a rebuild

    def recommend(
        self,
        user_idx: np.ndarray,
        user_items: sparse.csr_matrix,
        n: int = 10,
        filter_already_bought: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        from serving.recommend import recommend_batch
        from serving.rules.loader import load_rules

        model, rules = self._model, load_rules(self.rules_file)
        ids = np.asarray(self.served.inter.customer_ids).astype(str)[np.asarray(user_idx)]
        out_ids = np.full((len(ids), n), -1, np.int32)
        out_scores = np.full((len(ids), n), -np.inf, np.float32)
        for lo in range(0, len(ids), 4_096):
            part = ids[lo : lo + 4_096].tolist()
            for r, res in enumerate(recommend_batch(model, part, [None] * len(part), n, rules)):
                picks = [model.item_pos[p.item_id] for p in res.items]
                out_ids[lo + r, : len(picks)] = picks
                out_scores[lo + r, : len(picks)] = [p.score for p in res.items]
        return out_ids, out_scores

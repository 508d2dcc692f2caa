"""LoadedModel: one verified bundle in memory, ready for requests; immutable once built.

Hot reload builds a new LoadedModel beside the old one and swaps a reference
(serving/state.py), so a request that already holds the old object finishes on it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np
import polars as pl
from scipy import sparse

from features.tiers import DEFAULT_RULES as DEFAULT_TIER_RULES
from patron.bundle import BundleData, Manifest, load_bundle
from patron.scoring import Popular, ScoringModel, category_codes
from patron.scoring.index import HNSW_EF_SEARCH, HNSW_MIN_ITEMS, build_index, set_ef_search
from serving.index import load_index
from serving.render import ItemsJson
from serving.rules.engine import ItemTable

log = logging.getLogger("patron.serving")


@dataclass(frozen=True)
class LoadedModel:
    """A bundle plus everything derived from it once: index, id maps, item table, popularity."""

    data: BundleData
    manifest: Manifest
    version: str  # registry version, or the bundle's own, or its fingerprint
    alias: str | None
    source: str  # where it came from: a directory or models:/name@alias
    index: faiss.Index
    item_pos: dict[str, int]
    customer_pos: dict[str, int]
    items: ItemTable
    item_id_list: list[str]  # item ids as Python strings, by bundle index (responses)
    items_json: ItemsJson  # renders batch picks as response JSON (caches per model)
    scoring: ScoringModel  # what the scoring library reads (patron/scoring)
    popular_overall: Popular
    popular_tier: dict[str, Popular]
    popular_category: dict[str, Popular]
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    # arrays derived from this model for the batch path (popular rows per tier set), built
    # on first use; the model's own fields never change
    cache: dict[object, object] = field(default_factory=dict, compare=False, repr=False)

    @property
    def tiers(self) -> tuple[str, ...]:
        """Tier names, lowest first (``model_tiers``); the item table is ranked by them."""
        return self.items.tier_names

    def tier_rank(self, tier: str | None) -> int:
        return tier_rank(tier, self.items.tier_names)

    @property
    def fingerprint(self) -> str:
        return self.manifest.fingerprint()

    def training_items(self, customer_id: str) -> np.ndarray:
        pos = self.customer_pos.get(customer_id)
        if pos is None:
            return np.empty(0, dtype=np.int32)
        ui: sparse.csr_matrix = self.data.user_items
        return np.asarray(ui.indices[ui.indptr[pos] : ui.indptr[pos + 1]], dtype=np.int32)

    def popular_for(self, tier: str | None, category: str | None = None) -> Popular:
        if category is not None and category in self.popular_category:
            return self.popular_category[category]
        if tier is not None and tier in self.popular_tier:
            return self.popular_tier[tier]
        return self.popular_overall


def model_tiers(manifest: Manifest) -> tuple[str, ...]:
    """The tier names, lowest first, the model was trained with (its manifest); bundles written
    before tiers travelled with them get the built-in tier rules (config/tiers.yaml)."""
    if manifest.tiers:
        return tuple(manifest.tiers)
    return tuple(t.name for t in DEFAULT_TIER_RULES.tiers)


def tier_rank(tier: str | None, tiers: tuple[str, ...]) -> int:
    """0 = lowest tier; unknown or missing tiers rank lowest."""
    if tier is None:
        return 0
    try:
        return tiers.index(tier)
    except ValueError:
        return 0


def build_item_table(
    catalog: pl.DataFrame, item_ids: np.ndarray, tiers: tuple[str, ...]
) -> ItemTable:
    """Catalog columns as arrays aligned to bundle item index (catalog row j = item j)."""
    n = catalog.height

    def col(name: str, dtype: pl.DataType, default: object) -> pl.Series:
        if name in catalog.columns:
            return catalog[name].cast(dtype, strict=False).fill_null(default)
        return pl.Series(name, [default] * n, dtype=dtype)

    codes, categories = category_codes(catalog)
    min_tier = col("min_tier", pl.String(), "")
    now = datetime.now(UTC)
    if "launched_at" in catalog.columns:
        launched = catalog["launched_at"].cast(pl.Datetime("us", "UTC"), strict=False)
        age_s = (pl.Series([now] * n, dtype=pl.Datetime("us", "UTC")) - launched).dt.total_seconds()
        days = (age_s / 86_400.0).fill_null(float("nan"))
    else:
        days = pl.Series([float("nan")] * n)
    return ItemTable(
        item_ids=item_ids,
        category_code=codes,
        categories=categories,
        price=col("price", pl.Float64(), float("nan")).to_numpy().astype(np.float32),
        in_stock=col("in_stock", pl.Boolean(), True).to_numpy().astype(bool),
        min_tier_rank=np.array(
            [tier_rank(t, tiers) if t else 0 for t in min_tier.to_list()], dtype=np.int8
        ),
        premium=col("premium", pl.Boolean(), False).to_numpy().astype(bool),
        on_promo=col("on_promo", pl.Boolean(), False).to_numpy().astype(bool),
        launched_days_ago=days.to_numpy().astype(np.float32),
        tier_names=tiers,
    )


def build_model(
    data: BundleData,
    *,
    version: str | None = None,
    alias: str | None = None,
    source: str = "",
    index_path: Path | None = None,
    hnsw_min_items: int = HNSW_MIN_ITEMS,
    ef_search: int = HNSW_EF_SEARCH,
) -> LoadedModel:
    """Derive everything requests need from a loaded bundle (once per bundle)."""
    t0 = time.perf_counter()
    n_items, dim = data.item_factors.shape
    if index_path is not None and index_path.is_file():
        index = load_index(index_path, n_items, dim)
    else:
        index = build_index(np.asarray(data.item_factors), hnsw_min_items)
    set_ef_search(index, ef_search)
    item_ids = data.item_ids.astype(str)
    item_pos = dict(zip(item_ids.tolist(), range(len(item_ids)), strict=True))
    cids = data.customer_ids.astype(str).tolist()
    customer_pos = dict(zip(cids, range(len(cids)), strict=True))
    scoring = ScoringModel.from_bundle(data, index)
    scopes = scoring.popular
    model = LoadedModel(
        data=data,
        manifest=data.manifest,
        version=version or data.manifest.model_version or data.manifest.fingerprint(),
        alias=alias,
        source=source,
        index=index,
        item_pos=item_pos,
        customer_pos=customer_pos,
        items=build_item_table(data.catalog, item_ids, model_tiers(data.manifest)),
        item_id_list=item_ids.tolist(),
        items_json=ItemsJson(item_ids.tolist()),
        scoring=scoring,
        popular_overall=scopes[("overall", "")],
        popular_tier={k: p for (s, k), p in scopes.items() if s == "tier"},
        popular_category={k: p for (s, k), p in scopes.items() if s == "category"},
    )
    log.info(
        "model %s loaded: %d items, %d customers, %s index in %.2fs",
        model.version,
        n_items,
        len(customer_pos),
        type(index).__name__,
        time.perf_counter() - t0,
    )
    return model


def load_model(
    bundle_dir: Path,
    *,
    version: str | None = None,
    alias: str | None = None,
    source: str | None = None,
    verify: bool = True,
    hnsw_min_items: int = HNSW_MIN_ITEMS,
    ef_search: int = HNSW_EF_SEARCH,
) -> LoadedModel:
    """Verify and load a bundle directory (factors memory-mapped) into a LoadedModel."""
    bundle_dir = Path(bundle_dir)
    data = load_bundle(bundle_dir, verify=verify, mmap=True)
    return build_model(
        data,
        version=version,
        alias=alias,
        source=source or str(bundle_dir),
        index_path=bundle_dir / "faiss.index",
        hnsw_min_items=hnsw_min_items,
        ef_search=ef_search,
    )

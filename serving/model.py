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

from features.schemas import DEFAULT_TIERS
from patron.bundle import BundleData, Manifest, load_bundle
from serving.index import HNSW_EF_SEARCH, build_index, load_index, set_ef_search
from serving.render import ItemsJson
from serving.rules.engine import ItemTable

log = logging.getLogger("patron.serving")

POPULAR_DEPTH = 500  # popular items kept per scope (tier / category / overall)


@dataclass(frozen=True)
class Popular:
    """Popular items of one scope, best first."""

    item_idx: np.ndarray  # int32
    score: np.ndarray  # float32


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
    # co-purchase CSR as the compiled candidate pass takes it: indptr int64, indices int32,
    # data float32 (converted once, not per batch)
    copurchase_arrays: tuple[np.ndarray, np.ndarray, np.ndarray]
    item_gram: np.ndarray  # Y^T Y (f, f) float64, for fold-in
    popular_overall: Popular
    popular_tier: dict[str, Popular]
    popular_category: dict[str, Popular]
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    # arrays derived from this model for the batch path (popular rows per tier set), built
    # on first use; the model's own fields never change
    cache: dict[object, object] = field(default_factory=dict, compare=False, repr=False)

    @property
    def fingerprint(self) -> str:
        return self.manifest.fingerprint()

    @property
    def reg(self) -> float:
        p = self.manifest.params
        return float(p.get("regularization", p.get("reg", 0.01)))

    @property
    def alpha(self) -> float:
        return float(self.manifest.params.get("alpha", 1.0))

    def user_vector(self, customer_id: str) -> np.ndarray | None:
        pos = self.customer_pos.get(customer_id)
        if pos is None:
            return None
        return np.asarray(self.data.user_factors[pos], dtype=np.float32)

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


def tier_rank(tier: str | None) -> int:
    """0 = lowest tier; unknown or missing tiers rank lowest."""
    if tier is None:
        return 0
    try:
        return DEFAULT_TIERS.index(tier.lower())
    except ValueError:
        return 0


def build_item_table(catalog: pl.DataFrame, item_ids: np.ndarray) -> ItemTable:
    """Catalog columns as arrays aligned to bundle item index (catalog row j = item j)."""
    n = catalog.height

    def col(name: str, dtype: pl.DataType, default: object) -> pl.Series:
        if name in catalog.columns:
            return catalog[name].cast(dtype, strict=False).fill_null(default)
        return pl.Series(name, [default] * n, dtype=dtype)

    category = col("category", pl.String(), "unknown")
    categories = tuple(sorted(set(category.to_list())))
    code = {c: i for i, c in enumerate(categories)}
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
        category_code=np.array([code[c] for c in category.to_list()], dtype=np.int32),
        categories=categories,
        price=col("price", pl.Float64(), float("nan")).to_numpy().astype(np.float32),
        in_stock=col("in_stock", pl.Boolean(), True).to_numpy().astype(bool),
        min_tier_rank=np.array(
            [tier_rank(t) if t else 0 for t in min_tier.to_list()], dtype=np.int8
        ),
        premium=col("premium", pl.Boolean(), False).to_numpy().astype(bool),
        on_promo=col("on_promo", pl.Boolean(), False).to_numpy().astype(bool),
        launched_days_ago=days.to_numpy().astype(np.float32),
    )


def _popular_scopes(popularity: pl.DataFrame) -> dict[tuple[str, str], Popular]:
    out: dict[tuple[str, str], Popular] = {}
    if popularity.height == 0:
        return out
    pop = (
        popularity.select(
            pl.col("scope").cast(pl.String),
            pl.col("key").cast(pl.String).fill_null(""),
            pl.col("item_idx").cast(pl.Int32),
            pl.col("score").cast(pl.Float32),
        )
        .sort(["scope", "key", "score"], descending=[False, False, True])
        .group_by(["scope", "key"], maintain_order=True)
        .head(POPULAR_DEPTH)
    )
    for (scope, key), part in pop.group_by(["scope", "key"], maintain_order=True):
        out[(str(scope), str(key))] = Popular(
            part["item_idx"].to_numpy().astype(np.int32),
            part["score"].to_numpy().astype(np.float32),
        )
    return out


def build_model(
    data: BundleData,
    *,
    version: str | None = None,
    alias: str | None = None,
    source: str = "",
    index_path: Path | None = None,
    hnsw_min_items: int = 50_000,
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
    y = np.asarray(data.item_factors, dtype=np.float64)
    scopes = _popular_scopes(data.popularity)
    overall = scopes.get(("overall", "")) or next(
        (p for (s, _), p in scopes.items() if s == "overall"), None
    )
    if overall is None:  # no popularity table: fall back to training purchase counts
        counts = np.asarray(data.user_items.sum(axis=0)).ravel().astype(np.float32)
        top = np.argsort(-counts, kind="stable")[:POPULAR_DEPTH].astype(np.int32)
        overall = Popular(top, counts[top])
    model = LoadedModel(
        data=data,
        manifest=data.manifest,
        version=version or data.manifest.model_version or data.manifest.fingerprint(),
        alias=alias,
        source=source,
        index=index,
        item_pos=item_pos,
        customer_pos=customer_pos,
        items=build_item_table(data.catalog, item_ids),
        item_id_list=item_ids.tolist(),
        items_json=ItemsJson(item_ids.tolist()),
        copurchase_arrays=(
            data.copurchase.indptr.astype(np.int64),
            data.copurchase.indices.astype(np.int32),
            data.copurchase.data.astype(np.float32),
        ),
        item_gram=y.T @ y,
        popular_overall=overall,
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
    hnsw_min_items: int = 50_000,
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

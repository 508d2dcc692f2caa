"""``training.pipeline.train`` on block data: both final-fit paths give a complete bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from patron.bundle import load_bundle
from tests.training.conftest import block_events
from training.engines import holdout
from training.interactions import build_interactions
from training.pipeline import train


@pytest.mark.parametrize(("eval_customers", "final_fit"), [(2, "validated"), (48, "refit")])
def test_train_paths(eval_customers: int, final_fit: str, tmp_path: Path) -> None:
    events = block_events()
    rest, test = holdout(events, eval_customers)
    assert rest.height + test.height == events.height
    assert test["customer_id"].n_unique() == eval_customers

    result = train(events, out_dir=tmp_path / "b", eval_customers=eval_customers, with_faiss=True)
    assert result.tags["final_fit"].startswith(final_fit)
    assert result.metrics["val_ndcg@10"] > 0
    b = load_bundle(tmp_path / "b")
    full = build_interactions(events).binary()
    # the bundle's purchase lists include the held-out purchases (nothing re-recommended)
    assert (b.user_items != full).nnz == 0
    assert np.isfinite(b.user_factors).all() and np.abs(b.user_factors).sum(axis=1).min() > 0
    assert (tmp_path / "b" / "faiss.index").is_file()
    # every customer's nearest items by that index, precomputed (row = exact top by score)
    assert b.als_candidates is not None
    n_items = len(b.item_ids)
    assert b.als_candidates.shape == (len(b.customer_ids), min(64, n_items))
    scores = b.user_factors @ b.item_factors.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    hits = [len(set(t) & set(r[:5])) for t, r in zip(top, b.als_candidates, strict=True)]
    assert np.mean(hits) >= 4.9  # exact index below the HNSW size: ties aside, identical
    # recorded, and high: exact index here (block data has near-ties, so not exactly 1)
    assert 0.9 <= b.manifest.metrics["als_candidates.recall_at_10"] <= 1.0
    assert b.manifest.params["als_candidates.depth"] == b.als_candidates.shape[1]
    # and their scores, stored beside them (user . item factors; 0 for padding)
    assert b.als_scores is not None and b.als_scores.shape == b.als_candidates.shape
    rows = np.arange(len(b.customer_ids))[:, None]
    want = np.where(b.als_candidates >= 0, scores[rows, np.maximum(b.als_candidates, 0)], 0)
    assert np.allclose(b.als_scores, want, atol=1e-5)


def test_tiers_travel_from_the_features_into_the_bundle(tmp_path: Path) -> None:
    """features build records its tier scheme beside customers.parquet; train reads it and
    writes it into the manifest (serving ranks min_tier eligibility by it)."""
    import polars as pl

    from features.tiers import TierRules, tier_names_beside, write_tier_names

    feats = tmp_path / "features"
    feats.mkdir()
    rules = TierRules.model_validate(
        {"tiers": [{"name": n, "threshold": t} for n, t in (("member", 0), ("vip", 100))]}
    )
    write_tier_names(feats, rules)
    assert tier_names_beside(feats / "customers.parquet") == ("member", "vip")
    assert tier_names_beside(None) == ("bronze", "silver", "gold", "platinum")
    (feats / "tiers.json").write_text('{"tiers": []}')
    with pytest.raises(ValueError, match="non-empty"):
        tier_names_beside(feats / "customers.parquet")

    events = block_events()
    ids = events["customer_id"].unique().sort().to_list()
    customers = pl.DataFrame(
        {"customer_id": ids, "tier": ["vip" if i % 2 else "member" for i in range(len(ids))]}
    )
    train(
        events,
        out_dir=tmp_path / "b",
        customers=customers,
        tiers=("member", "vip"),
        evaluate=False,
        with_faiss=False,
    )
    b = load_bundle(tmp_path / "b")
    assert b.manifest.tiers == ["member", "vip"]
    keys = set(b.popularity.filter(pl.col("scope") == "tier")["key"].to_list())
    assert keys == {"member", "vip"}

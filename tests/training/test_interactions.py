from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from tests.training.conftest import to_events
from training.interactions import baskets_matrix, build_interactions


def _events() -> pl.DataFrame:
    d = datetime(2024, 1, 1, tzinfo=UTC)
    d2 = datetime(2024, 1, 11, tzinfo=UTC)
    return to_events(
        pl.DataFrame(
            {
                "customer_id": ["a", "a", "a", "b", "b", "c"],
                "item_id": ["x", "x", "y", "y", "y", None],
                "ts": [d, d2, d2, d, d2, d],
                "quantity": [2.0, 1.0, 1.0, 1.0, -1.0, 1.0],
                "order_id": ["o1", "o2", "o2", "o3", "o4", "o5"],
            }
        )
    )


def test_repeats_add_returns_subtract() -> None:
    inter = build_interactions(_events())
    assert inter.customer_ids.tolist() == ["a"]  # b returned everything, c has no item
    assert inter.item_ids.tolist() == ["x", "y"]
    np.testing.assert_allclose(inter.matrix.toarray(), [[3.0, 1.0]])
    assert inter.counts["pairs_net_nonpositive"] == 1
    assert inter.counts["events_without_item"] == 1
    assert inter.matrix.dtype == np.float32


def test_log_scaling_and_decay() -> None:
    inter = build_interactions(_events(), log_scale=True)
    np.testing.assert_allclose(inter.matrix.toarray(), [[np.log1p(3.0), np.log1p(1.0)]], rtol=1e-6)
    decayed = build_interactions(_events(), half_life_days=10.0)
    # the 2-unit purchase is 10 days old: 2 * 0.5 + 1
    np.testing.assert_allclose(decayed.matrix.toarray(), [[2.0, 1.0]], rtol=1e-6)


def test_catalog_order_first() -> None:
    inter = build_interactions(_events(), item_ids=np.array(["z", "y"]))
    assert inter.item_ids.tolist() == ["z", "y", "x"]
    assert inter.matrix[:, 0].nnz == 0


def test_baskets_from_orders() -> None:
    m = baskets_matrix(_events(), np.array(["x", "y"]))
    assert m is not None and m.shape == (1, 2)  # only o2 has two items


def test_missing_columns() -> None:
    with pytest.raises(ValueError, match="item_id"):
        build_interactions(pl.DataFrame({"customer_id": ["a"]}))

"""One contract suite run against every recommender on block-structured data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import sparse

from training.als import ALSParams, ALSRecommender
from training.copurchase import CoPurchaseParams, CoPurchaseRecommender
from training.popularity import PopularityRecommender
from training.recommender import Recommender

N_BLOCK_ITEMS = 8


def make(kind: str) -> Any:
    if kind == "als":
        return ALSRecommender(ALSParams(factors=8, regularization=0.1, alpha=5, iterations=20))
    if kind == "ease":
        return CoPurchaseRecommender(CoPurchaseParams(method="ease", ease_lambda=5.0, top_n=10))
    if kind == "bm25":
        return CoPurchaseRecommender(CoPurchaseParams(method="bm25", top_n=10))
    return PopularityRecommender()


KINDS = ["als", "ease", "bm25", "popular"]  # the served blend: tests/scoring


@pytest.mark.parametrize("kind", KINDS)
def test_contract(kind: str, block_matrix: sparse.csr_matrix, tmp_path: Path) -> None:
    x = block_matrix
    model = make(kind).fit(x)
    assert isinstance(model, Recommender)
    users = np.arange(x.shape[0])
    ids, scores = model.recommend(users, x, n=2)
    assert ids.shape == scores.shape == (x.shape[0], 2)
    bought = x.toarray() > 0
    # never recommends an already-bought item
    assert not bought[users[:, None], np.maximum(ids, 0)][ids >= 0].any()
    # scores are sorted best first
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    if kind != "popular":  # personalised models fill the holes of the customer's own block
        block = users // 12
        assert (ids // N_BLOCK_ITEMS == block[:, None]).mean() > 0.95
    # save / load round trip without pickle gives the same picks
    model.save(tmp_path / kind)
    assert not list((tmp_path / kind).rglob("*.pkl"))
    again = type(model).load(tmp_path / kind)
    ids2, scores2 = again.recommend(users, x, n=2)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_allclose(scores, scores2, rtol=1e-5)


@pytest.mark.parametrize("kind", ["als", "ease", "bm25"])
def test_similar_items_stay_in_block(kind: str, block_matrix: sparse.csr_matrix) -> None:
    model = make(kind).fit(block_matrix)
    items = np.arange(block_matrix.shape[1])
    ids, _ = model.similar_items(items, n=3)
    assert not (ids == items[:, None]).any()
    valid = ids >= 0
    same = (ids // N_BLOCK_ITEMS == (items // N_BLOCK_ITEMS)[:, None]) & valid
    assert same.sum() / valid.sum() > 0.9


def test_unfiltered_recommend_can_return_bought(block_matrix: sparse.csr_matrix) -> None:
    model = make("popular").fit(block_matrix)
    ids, _ = model.recommend(np.array([0]), block_matrix, n=5, filter_already_bought=False)
    assert block_matrix[0, ids[0]].toarray().any()


def test_ease_refuses_large_dense() -> None:
    model = CoPurchaseRecommender(CoPurchaseParams(method="ease", dense_max_items=10))
    with pytest.raises(ValueError, match="dense_max_items"):
        model.fit(sparse.random(5, 20, density=0.5, format="csr", random_state=0))


def test_ease_in_place_float32_equals_the_closed_form() -> None:
    from training.copurchase import ease_from_gram, ease_max_items, keep_top_n

    rng = np.random.default_rng(3)
    x = (rng.random((400, 2600)) < 0.01).astype(np.float32)  # > one 2048-row block
    gram = x.T @ x
    g = gram.astype(np.float64) + 50.0 * np.eye(gram.shape[0])
    p = np.linalg.inv(g)
    expected = -p / np.diag(p)[None, :]
    np.fill_diagonal(expected, 0.0)
    work = gram.astype(np.float32)
    got = ease_from_gram(work, 50.0)
    assert np.shares_memory(got, work)  # one items x items matrix for the whole job
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()
    top = keep_top_n(got, 7)
    row = np.asarray(expected[5]).copy()
    best = np.argsort(-row, kind="stable")[:7]
    assert set(top[5].indices) == set(best[row[best] > 0])
    # the default limit comes from the memory budget: one float32 matrix (+10%) in 4 GiB
    assert (
        ease_max_items(4.0) ** 2 * 4 * 1.1 <= 4 * 2**30 < (ease_max_items(4.0) + 1) ** 2 * 4 * 1.1
    )
    assert CoPurchaseParams().dense_max_items == ease_max_items(4.0) > 30_000


def test_copurchase_auto_switches_to_sparse_above_limit() -> None:
    x = sparse.random(50, 40, density=0.2, format="csr", random_state=0)
    model = CoPurchaseRecommender(CoPurchaseParams(dense_max_items=30, top_n=5)).fit(x)
    assert model.method_used == "cosine"
    assert np.diff(model.table.indptr).max() <= 5


def test_tier_popularity() -> None:
    x = sparse.csr_matrix(np.array([[1, 0, 0], [1, 0, 0], [0, 1, 1], [0, 0, 1]], np.float32))
    pop = PopularityRecommender(np.array([0, 0, 2, 2])).fit(x)
    ids, _ = pop.recommend(np.array([0, 2]), sparse.csr_matrix((4, 3)), n=1)
    assert ids[:, 0].tolist() == [0, 2]  # bronze likes item 0, gold likes item 2


def test_top_n_is_score_then_column_order_with_ties_and_non_finite() -> None:
    from training.recommender import top_n

    rng = np.random.default_rng(11)
    for _ in range(300):
        m, k = int(rng.integers(1, 60)), int(rng.integers(0, 12))
        sc = rng.integers(0, 6, size=(5, m)).astype(np.float32)  # many ties
        sc[rng.random(sc.shape) < 0.1] = np.nan
        sc[rng.random(sc.shape) < 0.1] = -np.inf
        exclude = sparse.random(
            5, m, density=0.1, format="csr", random_state=int(rng.integers(1e6))
        )
        ids, best = top_n(sc.copy(), k, exclude)
        for r in range(5):
            banned = set(exclude[r].indices)
            ok = [j for j in range(m) if np.isfinite(sc[r, j]) and j not in banned]
            want = sorted(ok, key=lambda j: (-sc[r, j], j))[:k]
            assert ids[r].tolist() == want + [-1] * (k - len(want))
            assert best[r, : len(want)].tolist() == [sc[r, j] for j in want]
            assert np.isneginf(best[r, len(want) :]).all()

"""Precomputed ALS neighbours in the bundle: the API and the batch path read a row instead of
searching FAISS, and answer exactly as the search would."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from patron.bundle import BundleError, load_bundle, write_bundle
from serving import service
from serving.batch import recommend_batch
from serving.index import build_index, precompute_candidates
from serving.model import LoadedModel, load_model
from serving.rules.loader import load_rules
from tests.serving.helpers import customer_id, make_bundle_data
from tests.serving.test_batch import DEFAULT_RULES, _rows


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedModel, LoadedModel]:
    base = tmp_path_factory.mktemp("pre")
    plain = make_bundle_data(seed=3)
    write_bundle(plain, base / "plain")
    table = precompute_candidates(build_index(plain.item_factors), plain.user_factors, 64)
    with_table = make_bundle_data(seed=3)
    with_table.als_candidates = table
    write_bundle(with_table, base / "pre")
    return load_model(base / "plain"), load_model(base / "pre")


def test_bundle_round_trip_and_validation(tmp_path: Path) -> None:
    data = make_bundle_data(n_customers=50, seed=1)
    data.als_candidates = np.zeros((49, 8), np.int32)
    with pytest.raises(BundleError, match="one row per customer"):
        write_bundle(data, tmp_path / "bad")
    data.als_candidates = np.arange(50 * 8, dtype=np.int32).reshape(50, 8) % 240
    m = write_bundle(data, tmp_path / "ok")
    assert "als_candidates.npy" in m.files
    back = load_bundle(tmp_path / "ok")
    assert back.als_candidates is not None
    assert np.array_equal(back.als_candidates, data.als_candidates)
    (tmp_path / "ok" / "als_candidates.npy").write_bytes(b"tampered")
    with pytest.raises(BundleError, match=r"checksum mismatch for als_candidates\.npy"):
        load_bundle(tmp_path / "ok")


def test_precomputed_equals_search(
    pair: tuple[LoadedModel, LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, pre = pair
    rules = load_rules(DEFAULT_RULES)
    ids, rows, excludes = _rows(80, seed=11)
    searched = {"n": 0}
    real_search = pre.index.search

    def counting(q, k):  # type: ignore[no-untyped-def]
        searched["n"] += len(q)
        return real_search(q, k)

    monkeypatch.setattr(pre.index, "search", counting)
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)
    batch = recommend_batch(pre, ids, rows, 10, rules, excludes, now=now)
    for cid, row, ex, b in zip(ids, rows, excludes, batch, strict=True):
        want = service.recommend(plain, cid, row, 10, exclude=ex, rules=rules)
        got = service.recommend(pre, cid, row, 10, exclude=ex, rules=rules)
        for res in (got, b):
            assert [p.item_id for p in res.items] == [p.item_id for p in want.items], cid
            assert [p.reasons for p in res.items] == [p.reasons for p in want.items], cid
            assert np.allclose([p.score for p in res.items], [p.score for p in want.items])
    # only customers without a row (fold-in: unknown to the model) were searched
    unknown_with_vec = sum(
        1
        for c, r in zip(ids, rows, strict=True)
        if c not in pre.customer_pos and r and r.recent_items
    )
    assert 0 < searched["n"] <= 2 * unknown_with_vec


def test_deeper_requests_fall_back_to_search(pair: tuple[LoadedModel, LoadedModel]) -> None:
    """A request needing more neighbours than the row holds (here k=40: over-fetch 160 > 64)
    searches FAISS, with the same answer as without the table."""
    plain, pre = pair
    rules = load_rules(DEFAULT_RULES)
    for u in (1, 2, 3):
        a = service.recommend(plain, customer_id(u), None, 40, rules=rules)
        b = service.recommend(pre, customer_id(u), None, 40, rules=rules)
        assert [p.item_id for p in a.items] == [p.item_id for p in b.items]

"""Precomputed ALS neighbours in the bundle: the API and the batch path read a row instead of
searching FAISS, and answer exactly as the search would."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from patron.bundle import BundleError, load_bundle, write_bundle
from patron.scoring.rows import candidate_scores
from serving import service
from serving.index import build_index, precompute_candidates
from serving.model import LoadedModel, load_model
from serving.recommend import recommend_batch, recommend_batch_rendered
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


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """The ``pair`` bundle with the neighbours' scores stored (``als_scores.npy``)."""
    base = tmp_path_factory.mktemp("scored")
    data = make_bundle_data(seed=3)
    data.als_candidates = precompute_candidates(
        build_index(data.item_factors), data.user_factors, 64
    )
    data.als_scores = candidate_scores(data.als_candidates, data.item_factors, data.user_factors)
    write_bundle(data, base / "scored")
    return load_model(base / "scored")


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
    data.als_scores = np.zeros((50, 7), np.float32)
    with pytest.raises(BundleError, match="shape of als_candidates"):
        write_bundle(data, tmp_path / "bad")
    data.als_scores = np.zeros((50, 8), np.float64)
    with pytest.raises(BundleError, match="als_scores must be float32"):
        write_bundle(data, tmp_path / "bad")
    data.als_scores = candidate_scores(data.als_candidates, data.item_factors, data.user_factors)
    m = write_bundle(data, tmp_path / "scored")
    back = load_bundle(tmp_path / "scored")
    assert "als_scores.npy" in m.files and back.als_scores is not None
    assert np.array_equal(back.als_scores, data.als_scores)
    data.als_candidates = None
    with pytest.raises(BundleError, match="als_scores needs als_candidates"):
        write_bundle(data, tmp_path / "bad")


def test_stored_scores_are_the_computed_bits(
    pair: tuple[LoadedModel, LoadedModel], scored: LoadedModel
) -> None:
    """With ``als_scores`` the answers are byte-identical to scoring the neighbours against
    the vectors, on both paths, and the items' factors are not read for known customers."""
    _, pre = pair
    rules = load_rules(DEFAULT_RULES)
    ids, rows, excludes = _rows(80, seed=12)
    now = time.time()
    known = [i for i, c in enumerate(ids) if c in pre.customer_pos]
    # factors the scored model must not need for known customers: NaN would show in scores
    blind = dataclasses.replace(
        scored,
        data=dataclasses.replace(
            scored.data, item_factors=np.full_like(scored.data.item_factors, np.nan)
        ),
    )
    for name, fn in (("batch", recommend_batch), ("rendered", recommend_batch_rendered)):
        want = fn(pre, ids, rows, 10, rules, excludes, now=now)
        got = fn(scored, ids, rows, 10, rules, excludes, now=now)
        kids = [ids[i] for i in known]
        blind_got = fn(
            blind, kids, [rows[i] for i in known], 10, rules, [excludes[i] for i in known], now=now
        )
        for w, g in zip(want, got, strict=True):
            assert w.items_json() == g.items_json(), name
        for i, g in zip(known, blind_got, strict=True):
            assert want[i].items_json() == g.items_json(), name
    for i in known[:20]:
        a = service.recommend(pre, ids[i], rows[i], 10, exclude=excludes[i], rules=rules)
        b = service.recommend(blind, ids[i], rows[i], 10, exclude=excludes[i], rules=rules)
        assert a.items_json() == b.items_json()


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

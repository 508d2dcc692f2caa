"""Candidate generation: fold-in maths, batch fold-in, blending and ranking invariants."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse

from serving.candidates import (
    CandidateSet,
    Source,
    SourceHits,
    blend,
    copurchase_hits,
    fold_in,
    fold_in_batch,
    generate,
)
from serving.index import build_index
from serving.model import build_model
from serving.ranking import rank
from serving.service import context_for
from tests.serving.helpers import make_bundle_data


def _direct_als_step(y: np.ndarray, items: np.ndarray, r: np.ndarray, reg: float, alpha: float):
    """The textbook ALS user update over the full item set: (YᵀCY + λI) x = YᵀCp."""
    c = np.ones(len(y))
    p = np.zeros(len(y))
    c[items] += alpha * r
    p[items] = 1.0
    a = (y.T * c) @ y + reg * np.eye(y.shape[1])
    return np.linalg.solve(a, (y.T * c) @ p)


def test_fold_in_matches_the_full_als_user_step() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=(300, 12)).astype(np.float32)
    items = np.array([3, 17, 42, 99])
    r = np.array([1.0, 2.0, 1.0, 5.0])
    got = fold_in(y, y.astype(np.float64).T @ y, items, reg=0.1, alpha=3.0, counts=r)
    want = _direct_als_step(y.astype(np.float64), items, r, 0.1, 3.0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_fold_in_agrees_with_implicit_recalculate_user() -> None:
    """Against the library that trains the model: implicit's own user recalculation."""
    from implicit.cpu.als import AlternatingLeastSquares

    rng = np.random.default_rng(1)
    ui = sparse.random(200, 150, density=0.05, random_state=2, format="csr", dtype=np.float32)
    ui.data[:] = 1.0
    model = AlternatingLeastSquares(
        factors=8, regularization=0.1, alpha=2.0, iterations=5, use_cg=False, random_state=3
    )
    model.fit(ui, show_progress=False)
    y = np.asarray(model.item_factors)
    row = ui[7]
    want = np.asarray(model.recalculate_user(7, row)).ravel()
    got = fold_in(y, y.astype(np.float64).T @ y, row.indices, reg=0.1, alpha=2.0)
    cos = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want)))
    assert cos > 0.999, cos
    del rng


def test_fold_in_batch_equals_single() -> None:
    rng = np.random.default_rng(4)
    y = rng.normal(size=(80, 6)).astype(np.float32)
    ui = sparse.random(40, 80, density=0.08, random_state=5, format="csr")
    ui.data = np.ceil(ui.data * 3)
    ui[7] = 0  # an empty row
    ui.eliminate_zeros()
    gram = y.astype(np.float64).T @ y
    batch = fold_in_batch(y, gram, ui, reg=0.05, alpha=1.5, chunk_nnz=16)
    for u in range(40):
        lo, hi = ui.indptr[u], ui.indptr[u + 1]
        single = fold_in(y, gram, ui.indices[lo:hi], reg=0.05, alpha=1.5, counts=ui.data[lo:hi])
        np.testing.assert_allclose(batch[u], single, rtol=1e-4, atol=1e-5)
    assert not batch[7].any()


def test_blend_merges_duplicates_and_keeps_best_source() -> None:
    hits = [
        SourceHits(Source.ALS, np.array([1, 2, 3]), np.array([0.9, 0.5, 0.1], np.float32)),
        SourceHits(
            Source.COPURCHASE,
            np.array([3, 4]),
            np.array([1.0, 0.2], np.float32),
            np.array([9, 9], np.int32),
        ),
    ]
    c = blend(hits, {"als": 1.0, "copurchase": 2.0})
    assert sorted(c.item_idx.tolist()) == [1, 2, 3, 4]
    assert c.item_idx[0] == 3  # found by both sources
    assert c.source[0] == Source.COPURCHASE and c.anchor_idx[0] == 9
    assert np.all(np.diff(c.score) <= 0)
    assert c.anchor_idx[c.item_idx == 1][0] == -1


def test_copurchase_prefers_most_recent_anchor() -> None:
    cp = sparse.csr_matrix(
        (np.array([1.0, 1.0]), np.array([5, 6]), np.array([0, 1, 2, 2, 2, 2, 2, 2])), shape=(7, 7)
    )
    h = copurchase_hits(cp, np.array([1, 0]))
    assert h.item_idx.tolist() == [6, 5] and h.score[0] > h.score[1]
    assert h.anchor_idx is not None and h.anchor_idx.tolist() == [1, 0]


MODEL = build_model(make_bundle_data(n_items=120, n_customers=50, f=8, seed=9))


@settings(max_examples=60, deadline=None)
@given(
    u=st.integers(0, 49),
    k=st.integers(1, 100),
    tier=st.sampled_from(["bronze", "silver", "gold", "platinum"]),
    excl=st.lists(st.integers(0, 119), max_size=30),
    recent=st.lists(st.integers(0, 119), max_size=10),
)
def test_picks_never_contain_excluded_or_ineligible(u, k, tier, excl, recent) -> None:
    from features.online import CustomerOnline

    m = MODEL
    online = CustomerOnline(
        customer_id=f"c{u:05d}",
        known=True,
        tier=tier,
        recent_items=tuple((f"i{j:04d}", 1.7e9) for j in recent),
    )
    ctx = context_for(m, online)
    pop = m.popular_for(tier)
    cands = generate(
        index=m.index,
        copurchase=m.data.copurchase,
        popular_idx=pop.item_idx,
        popular_score=pop.score,
        popular_source=Source.POPULAR_TIER,
        weights=m.manifest.blend,
        user_vec=m.user_vector(online.customer_id),
        recent_idx=ctx.recent_item_idx,
        n_als=120,
    )
    excl_idx = np.asarray(excl, np.int32)
    picks = rank(cands, ctx, m.items, k, excl_idx)
    got = set(picks.item_idx.tolist())
    assert len(picks.item_idx) == len(got) <= k
    assert not got & set(excl) and not got & set(recent)
    assert all(m.items.in_stock[j] for j in got)
    assert all(m.items.min_tier_rank[j] <= ctx.tier_rank for j in got)
    assert len(picks.reasons) == len(picks.item_idx)


def test_generate_without_vector_is_popular_only() -> None:
    m = MODEL
    pop = m.popular_overall
    c = generate(
        index=build_index(np.asarray(m.data.item_factors)),
        copurchase=m.data.copurchase,
        popular_idx=pop.item_idx,
        popular_score=pop.score,
        popular_source=Source.POPULAR,
        weights=m.manifest.blend,
        user_vec=None,
        recent_idx=np.empty(0, np.int32),
        n_als=50,
    )
    assert isinstance(c, CandidateSet) and set(c.source.tolist()) == {int(Source.POPULAR)}


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_compiled_batch_blend_equals_blend(data: st.DataObject) -> None:
    """serving.picks._blend_flat (numba) against serving.candidates.blend, customer by
    customer: items, bit-equal scores, sources and anchors, over ties (few distinct scores),
    flat sources, an item found by many anchors and empty sources."""
    from serving.picks import _blend_flat, _Hits

    n = data.draw(st.integers(1, 6))
    small = st.integers(0, 30)
    score = st.sampled_from([0.0, 0.25, 0.5, 0.5, 1.0, 2.0, -1.0])
    weights = {
        "als": 1.0,
        "copurchase": data.draw(st.sampled_from([0.0, 0.3, 0.7])),
        "popular": 0.1,
    }
    per_row: list[list[SourceHits]] = []
    flat: dict[int, list[tuple[int, int, float, int]]] = {0: [], 1: [], 2: []}
    for r in range(n):
        hits = []
        for part, src in enumerate((Source.ALS, Source.COPURCHASE, Source.POPULAR_TIER)):
            unique = src != Source.COPURCHASE
            items = data.draw(st.lists(small, max_size=25, unique=unique))
            scores = [data.draw(score) for _ in items]
            anchors = [data.draw(small) if src == Source.COPURCHASE else -1 for _ in items]
            if items:
                hits.append(
                    SourceHits(
                        src,
                        np.array(items, np.int32),
                        np.array(scores, np.float32),
                        np.array(anchors, np.int32) if src == Source.COPURCHASE else None,
                    )
                )
            flat[part] += [(r, i, s, a) for i, s, a in zip(items, scores, anchors, strict=True)]
        per_row.append(hits)
    parts = []
    for part, src in enumerate((Source.ALS, Source.COPURCHASE, Source.POPULAR_TIER)):
        rows = flat[part]
        parts.append(
            _Hits(
                np.array([x[0] for x in rows], np.int64),
                np.array([x[1] for x in rows], np.int32),
                np.array([x[2] for x in rows], np.float32),
                np.array([x[3] for x in rows], np.int32),
                np.full(len(rows), int(src), np.int8),
                np.full(len(rows), part, np.int64),
            )
        )
    got = _blend_flat(parts, weights, n)
    for r, hits in enumerate(per_row):
        want = blend(hits, weights)
        m = len(want)
        assert got.item_idx[r, :m].tolist() == want.item_idx.tolist()
        assert (got.item_idx[r, m:] == -1).all()
        assert np.array_equal(got.score[r, :m], want.score)
        assert got.source[r, :m].tolist() == want.source.tolist()
        assert got.anchor_idx[r, :m].tolist() == want.anchor_idx.tolist()


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=30),
    picks=st.lists(st.integers(-1, 29), max_size=20),
    wide=st.booleans(),
)
def test_take_rows_equals_row_slices(lengths: list[int], picks: list[int], wide: bool) -> None:
    """The compiled CSR row take = the rows sliced one by one (-1 = an empty row)."""
    from serving.blend_kernel import take_rows

    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64 if wide else np.int32)
    values = (np.arange(int(indptr[-1])) * 7 % 101).astype(np.float64 if wide else np.int32)
    rows = np.array([p if p < len(lengths) else -1 for p in picks], np.int64)
    ptr, got = take_rows(indptr, values, rows)
    want = [values[indptr[r] : indptr[r + 1]] if r >= 0 else values[:0] for r in rows]
    assert got.dtype == values.dtype
    assert ptr.tolist() == np.concatenate([[0], np.cumsum([len(w) for w in want])]).tolist()
    assert got.tolist() == (np.concatenate(want).tolist() if want else [])

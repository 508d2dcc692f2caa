"""The scoring library: fold-in maths, the compiled pass against a dense numpy oracle, and
its invariants (prefix in k, batch = single, popular fallback, anchors, exclusions)."""

from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import sparse

from patron.scoring import ScoreRequest, ScoringModel, Source, fold_in, fold_in_batch, score_batch
from patron.scoring import recommend as score_top_k
from patron.scoring.rows import take_rows
from tests.scoring.oracle import dense_scores
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


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=30),
    picks=st.lists(st.integers(-1, 29), max_size=20),
    wide=st.booleans(),
)
def test_take_rows_equals_row_slices(lengths: list[int], picks: list[int], wide: bool) -> None:
    """The compiled CSR row take = the rows sliced one by one (-1 = an empty row)."""

    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64 if wide else np.int32)
    values = (np.arange(int(indptr[-1])) * 7 % 101).astype(np.float64 if wide else np.int32)
    rows = np.array([p if p < len(lengths) else -1 for p in picks], np.int64)
    ptr, got = take_rows(indptr, values, rows)
    want = [values[indptr[r] : indptr[r + 1]] if r >= 0 else values[:0] for r in rows]
    assert got.dtype == values.dtype
    assert ptr.tolist() == np.concatenate([[0], np.cumsum([len(w) for w in want])]).tolist()
    assert got.tolist() == (np.concatenate(want).tolist() if want else [])


DATA = make_bundle_data(n_items=150, n_customers=60, f=8, seed=4)
DATA.manifest.blend = {"als": 0.5, "copurchase": 1.0, "popular": 0.05}
DATA.manifest.params = {"als.regularization": 0.5, "als.alpha": 2.0}
MODEL = ScoringModel.from_bundle(DATA)
TIERS = [None, "bronze", "silver", "gold", "platinum"]


def _one(u: int, **kw: object) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    recent = kw.pop("recent", [])
    exclude = kw.pop("exclude", [])
    req = ScoreRequest.build(
        MODEL,
        [u],
        tiers=[kw.pop("tier", None)],  # type: ignore[list-item]
        recent=[recent],  # type: ignore[list-item]
        exclude=[exclude],  # type: ignore[list-item]
        context=[kw.pop("context", -1)],  # type: ignore[list-item]
        category=[kw.pop("category", -1)],  # type: ignore[list-item]
    )
    c = score_batch(MODEL, req)
    m = int((c.item_idx[0] >= 0).sum())
    return c.item_idx[0, :m].tolist(), c.score[0, :m], c.source[0, :m], c.anchor_idx[0, :m]


@settings(max_examples=80, deadline=None)
@given(
    u=st.integers(-1, 59),
    tier=st.sampled_from(TIERS),
    recent=st.lists(st.integers(0, 149), max_size=6, unique=True),
    exclude=st.lists(st.integers(0, 149), max_size=20),
    context=st.integers(-1, 149),
    category=st.integers(-1, 5),
)
# items 42 and 134 tie in float32 (not in the oracle's float64): CI found it, 2026-12-02
@example(u=0, tier=None, recent=[66], exclude=[], context=1, category=-1)
def test_compiled_pass_equals_the_dense_oracle(u, tier, recent, exclude, context, category):
    """Same items in the same order with the same scores (to float32 rounding) as the dense
    formula over the same candidates, for any customer state and request context."""
    want_items, want_scores = dense_scores(
        DATA, u, tier=tier, recent=recent, exclude=exclude, context=context, category=category
    )
    got_items, got_scores, _, _ = _one(
        u, tier=tier, recent=recent, exclude=exclude, context=context, category=category
    )
    n = min(len(want_items), 300)
    assert len(got_items) == len(set(got_items)) == n
    np.testing.assert_allclose(got_scores, want_scores[:n], rtol=2e-5, atol=2e-6)
    # the same order, except where the oracle's float64 totals differ by less than float32
    # rounding: the pass ranks its float32 totals, exact ties by item index
    want_of = dict(zip(want_items, want_scores.tolist(), strict=True))
    for g, w in zip(got_items, want_items[:n], strict=True):
        assert g == w or (
            g in want_of and abs(want_of[g] - want_of[w]) <= 2e-6 + 2e-5 * abs(want_of[w])
        ), (g, w)


def test_batch_equals_single_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    pos = np.arange(-3, 60)
    recent = [rng.choice(150, int(rng.integers(0, 4)), replace=False) for _ in pos]
    tiers = [TIERS[i % 5] for i in range(len(pos))]
    batch = score_batch(MODEL, ScoreRequest.build(MODEL, pos, tiers=tiers, recent=recent))
    for r, u in enumerate(pos.tolist()):
        one = score_batch(
            MODEL, ScoreRequest.build(MODEL, [u], tiers=[tiers[r]], recent=[recent[r]])
        )
        for name in ("item_idx", "score", "source", "anchor_idx"):
            assert np.array_equal(getattr(one, name)[0], getattr(batch, name)[r]), (u, name)


def test_smaller_k_is_a_prefix_with_the_same_scores() -> None:
    users = np.arange(60)
    big_ids, big_scores = score_top_k(MODEL, users, 50)
    for k in (1, 7, 20):
        ids, scores = score_top_k(MODEL, users, k)
        assert np.array_equal(ids, big_ids[:, :k])
        assert np.array_equal(scores, big_scores[:, :k])


def test_training_purchases_are_never_candidates() -> None:
    ui = DATA.user_items.tocsr()
    ids, _ = score_top_k(MODEL, np.arange(60), 100)
    for u in range(60):
        assert not set(ids[u].tolist()) & set(ui.indices[ui.indptr[u] : ui.indptr[u + 1]].tolist())


def test_unknown_customer_gets_the_tiers_popular_items_with_their_scores() -> None:
    for tier in ("silver", None):
        items, scores, sources, _ = _one(-1, tier=tier)
        plist = MODEL.popular[("tier", tier) if tier else ("overall", "")]
        assert items == plist.item_idx[: len(items)].tolist() and len(items) == 100
        assert np.array_equal(scores, plist.score[: len(items)])
        want = Source.POPULAR_TIER if tier else Source.POPULAR
        assert set(sources.tolist()) == {int(want)}


def test_anchor_is_the_history_item_contributing_most() -> None:
    table = DATA.copurchase.tocsr()
    ui = DATA.user_items.tocsr()
    for u in range(0, 60, 7):
        history = ui.indices[ui.indptr[u] : ui.indptr[u + 1]].tolist()
        items, _, sources, anchors = _one(u)
        checked = 0
        for i, s, a in zip(items, sources.tolist(), anchors.tolist(), strict=True):
            if s != Source.COPURCHASE:
                assert a == -1
                continue
            terms = {j: float(table[j, i]) for j in history if table[j, i] != 0}
            assert a == max(terms, key=lambda j: (terms[j], -history.index(j)))
            checked += 1
        assert checked > 0


def test_batch_equals_single_when_item_ids_collide_in_the_scratch_table() -> None:
    """A catalog much larger than a row's hash table: item ids share table positions, and
    rows after the first must not see the previous rows' entries."""
    data = make_bundle_data(n_items=3000, n_customers=120, f=8, seed=7)
    model = ScoringModel.from_bundle(data)
    pos = np.arange(120)
    batch = score_batch(model, ScoreRequest.build(model, pos))
    for u in pos.tolist():
        one = score_batch(model, ScoreRequest.build(model, [u]))
        for name in ("item_idx", "score", "source", "anchor_idx"):
            assert np.array_equal(getattr(one, name)[0], getattr(batch, name)[u]), (u, name)


def test_batches_on_threads_equal_one_batch() -> None:
    """The export's way: parts of a batch scored at once on threads give the same rows."""
    from concurrent.futures import ThreadPoolExecutor

    data = make_bundle_data(n_items=400, n_customers=900, f=8, seed=11)
    model = ScoringModel.from_bundle(data)
    rng = np.random.default_rng(2)
    pos = np.arange(-20, 900)
    recent = [rng.choice(400, int(rng.integers(0, 3)), replace=False) for _ in pos]
    exclude = [[int(u) % 400] for u in pos]
    one = score_batch(model, ScoreRequest.build(model, pos, recent=recent, exclude=exclude))
    cuts = [(0, 300), (300, 610), (610, len(pos))]
    with ThreadPoolExecutor(3) as pool:
        parts = list(
            pool.map(
                lambda c: score_batch(
                    model,
                    ScoreRequest.build(
                        model,
                        pos[c[0] : c[1]],
                        recent=recent[c[0] : c[1]],
                        exclude=exclude[c[0] : c[1]],
                    ),
                ),
                cuts,
            )
        )
    for name in ("item_idx", "score", "source", "anchor_idx"):
        split = np.concatenate([getattr(p, name) for p in parts])
        assert np.array_equal(getattr(one, name), split), name

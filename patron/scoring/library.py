"""The scoring library: how a customer's candidates are generated and scored from a bundle.

Pure (no FastAPI, no Redis) and the only definition of it: the API (one request is a batch of
one), the email export, ``patron recommend``, the MLflow pyfunc model, ``patron evaluate`` and
``patron tune`` all call ``score_batch``. Formula, per customer (patron/scoring/kernel.py):

    score(i) = w_als * als(i) / max als + w_item * item(i) / max item + w_pop * pop(i) / max pop

- ``als(i)``: the customer's vector (or, for a customer the model has not seen, the vector
  folded in from their real-time purchases) . item i's factors, for the items of the
  customer's ALS neighbour list (their nearest items by the index); 0 outside it (scoring
  every candidate's factors cost 9x the time for the same ML-100K quality: select.py);
- ``item(i)``: the item-item model (EASE or co-purchase neighbour table) summed over the whole
  history: sum over history items j of table[j, i] (training purchases and real-time purchases
  weigh 1 each; a context item weighs as much as the rest of the history together, and
  with one ``w_item`` becomes ``w_item + w_als``: the item on screen matters as much as taste);
- ``pop(i)``: item i's popularity in the customer's tier;
- each maximum is taken over the customer's candidates (the ALS neighbour list, the table
  neighbours of the history, the tier's popular items), never over excluded items (training
  purchases, the request's exclusions); a source whose best score is <= 0 contributes 0.
- a customer with no vector and no history gets their tier's popular items with their
  popularity scores.

The weights are the bundle's (``Manifest.blend``). The candidate set does not depend on ``k``,
so a smaller ``k`` is a prefix of a larger one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np
import polars as pl

from patron.bundle import BundleData
from patron.scoring.foldin import fold_in
from patron.scoring.index import build_index
from patron.scoring.kernel import score_rows
from patron.scoring.rows import dot_scores, take_rows
from patron.scoring.types import CandidateBatch, Source

POPULAR_DEPTH = 500  # popular items kept per scope (tier / category / overall)
POP_CANDIDATES = 100  # popular-in-tier items among every customer's candidates (k <= 100)
ALS_DEPTH = 64  # ALS neighbours per customer (the bundle's precomputed depth when it has one)
CATEGORY_FETCH = 8  # a category filter discards most ALS neighbours: look that much deeper
OUT_DEPTH = 300  # candidates returned per customer, best first (the rules need spares)
CONTEXT_WEIGHT = 1.0  # x the history's size: the weight of the item on screen


@dataclass(frozen=True)
class Popular:
    """Popular items of one scope, best first."""

    item_idx: np.ndarray  # int32
    score: np.ndarray  # float32


def popular_scopes(popularity: pl.DataFrame, n_items: int) -> dict[tuple[str, str], Popular]:
    """The bundle's popularity table as lists per (scope, key), best first; ``("overall", "")``
    always exists (from the table, else empty)."""
    out: dict[tuple[str, str], Popular] = {}
    if popularity.height:
        pop = (
            popularity.select(
                pl.col("scope").cast(pl.String),
                pl.col("key").cast(pl.String).fill_null(""),
                pl.col("item_idx").cast(pl.Int32),
                pl.col("score").cast(pl.Float32),
            )
            .filter(pl.col("item_idx").is_between(0, n_items - 1))
            .sort(["scope", "key", "score", "item_idx"], descending=[False, False, True, False])
            .group_by(["scope", "key"], maintain_order=True)
            .head(POPULAR_DEPTH)
        )
        for (scope, key), part in pop.group_by(["scope", "key"], maintain_order=True):
            out[(str(scope), str(key))] = Popular(
                part["item_idx"].to_numpy().astype(np.int32),
                part["score"].to_numpy().astype(np.float32),
            )
    if ("overall", "") not in out:
        overall = next((p for (s, _), p in out.items() if s == "overall"), None)
        out[("overall", "")] = overall or Popular(np.empty(0, np.int32), np.empty(0, np.float32))
    return out


def category_codes(catalog: pl.DataFrame) -> tuple[np.ndarray, tuple[str, ...]]:
    """Each item's category as a code into the sorted category names (missing = "unknown")."""
    if "category" in catalog.columns:
        cat = catalog["category"].cast(pl.String, strict=False).fill_null("unknown")
    else:
        cat = pl.Series("category", ["unknown"] * catalog.height, dtype=pl.String)
    names = tuple(sorted(set(cat.to_list())))
    code = {c: i for i, c in enumerate(names)}
    return np.array([code[c] for c in cat.to_list()], np.int32), names


@dataclass(frozen=True, eq=False)
class ScoringModel:
    """What scoring reads from a bundle, as the compiled pass takes it (built once)."""

    user_factors: np.ndarray  # float32 (customers, f)
    item_factors: np.ndarray  # float32 (items, f)
    item_gram: np.ndarray  # float64 (f, f): Y^T Y, for fold-in
    ui_ptr: np.ndarray  # int64: training purchases per customer (CSR)
    ui_idx: np.ndarray  # int32
    cp_ptr: np.ndarray  # int64: item-item neighbour table per item (CSR), best first
    cp_idx: np.ndarray  # int32
    cp_data: np.ndarray  # float32
    table: np.ndarray | None  # int32 (customers, d): precomputed ALS neighbours
    table_scores: np.ndarray | None  # float32, the shape of ``table``
    index: faiss.Index
    weights: np.ndarray  # float32 (3,): als, copurchase (item-item), popular
    reg: float
    alpha: float
    item_category: np.ndarray  # int32 (items,)
    categories: tuple[str, ...]
    popular: dict[tuple[str, str], Popular]
    pop_names: tuple[str, ...]  # row 0 = overall, then the tiers with a list
    pop_items: np.ndarray  # int32 (lists, POP_CANDIDATES), -1 padded
    pop_scores: np.ndarray  # float32
    pop_len: np.ndarray  # int64
    pop_src: np.ndarray  # int8 Source of each list

    @property
    def n_items(self) -> int:
        return len(self.item_factors)

    @classmethod
    def from_bundle(cls, data: BundleData, index: faiss.Index | None = None) -> ScoringModel:
        y = np.asarray(data.item_factors, np.float32)
        y64 = y.astype(np.float64)
        params = data.manifest.params
        scopes = popular_scopes(data.popularity, len(data.item_ids))
        if not len(scopes[("overall", "")].item_idx):  # no table: training purchase counts
            counts = np.asarray(data.user_items.sum(axis=0)).ravel().astype(np.float32)
            top = np.argsort(-counts, kind="stable")[:POPULAR_DEPTH].astype(np.int32)
            scopes[("overall", "")] = Popular(top, counts[top])
        tiers = sorted(k for s, k in scopes if s == "tier")
        lists = [scopes[("overall", "")], *(scopes[("tier", t)] for t in tiers)]
        items = np.full((len(lists), POP_CANDIDATES), -1, np.int32)
        scores = np.zeros((len(lists), POP_CANDIDATES), np.float32)
        for r, p in enumerate(lists):
            m = min(len(p.item_idx), POP_CANDIDATES)
            items[r, :m], scores[r, :m] = p.item_idx[:m], p.score[:m]
        blend = data.manifest.blend
        codes, names = category_codes(data.catalog)
        ui, cp = data.user_items.tocsr(), data.copurchase.tocsr()
        return cls(
            user_factors=np.asarray(data.user_factors, np.float32),
            item_factors=y,
            item_gram=y64.T @ y64,
            ui_ptr=ui.indptr.astype(np.int64),
            ui_idx=ui.indices.astype(np.int32),
            cp_ptr=cp.indptr.astype(np.int64),
            cp_idx=cp.indices.astype(np.int32),
            cp_data=cp.data.astype(np.float32),
            table=data.als_candidates,
            table_scores=data.als_scores,
            index=index if index is not None else build_index(y),
            weights=np.array(
                [blend.get("als", 0.0), blend.get("copurchase", 0.0), blend.get("popular", 0.0)],
                np.float32,
            ),
            reg=float(params.get("als.regularization", params.get("regularization", 0.01))),
            alpha=float(params.get("als.alpha", params.get("alpha", 1.0))),
            item_category=codes,
            categories=names,
            popular=scopes,
            pop_names=("", *tiers),
            pop_items=items,
            pop_scores=scores,
            pop_len=np.array([min(len(p.item_idx), POP_CANDIDATES) for p in lists], np.int64),
            pop_src=np.array([Source.POPULAR] + [Source.POPULAR_TIER] * len(tiers), np.int8),
        )

    def pop_row(self, tier: str | None) -> int:
        """The popular list a customer of ``tier`` gets (overall when the tier has none)."""
        try:
            return self.pop_names.index(tier) if tier else 0
        except ValueError:
            return 0

    def with_weights(self, weights: dict[str, float]) -> ScoringModel:
        """The same model blended with other weights (``patron tune``)."""
        from dataclasses import replace

        w = [weights.get("als", 0.0), weights.get("copurchase", 0.0), weights.get("popular", 0.0)]
        return replace(self, weights=np.array(w, np.float32))


def _csr(lists: Sequence[Sequence[int] | np.ndarray] | None, n: int) -> tuple[np.ndarray, ...]:
    if lists is None:
        return np.zeros(n + 1, np.int64), np.zeros(0, np.int32)
    ptr = np.zeros(n + 1, np.int64)
    np.cumsum([len(x) for x in lists], out=ptr[1:])
    if ptr[-1] == 0:
        return ptr, np.zeros(0, np.int32)
    return ptr, np.concatenate([np.asarray(x, np.int32) for x in lists]).astype(np.int32)


@dataclass
class ScoreRequest:
    """A batch of customers to score; lists are CSR (indptr int64, item index int32)."""

    pos: np.ndarray  # int64 (n,): customer row in the model, -1 = not in the model
    pop_row: np.ndarray  # int64 (n,): their tier's popular list (ScoringModel.pop_row)
    recent_ptr: np.ndarray  # purchases received since training, newest first
    recent_idx: np.ndarray
    exclude_ptr: np.ndarray  # items the request leaves out
    exclude_idx: np.ndarray
    context: np.ndarray  # int32 (n,): the item on screen, -1 = none
    category: np.ndarray  # int32 (n,): category code to keep, -1 = all

    def __len__(self) -> int:
        return len(self.pos)

    @classmethod
    def build(
        cls,
        model: ScoringModel,
        pos: Sequence[int] | np.ndarray,
        *,
        tiers: Sequence[str | None] | None = None,
        recent: Sequence[Sequence[int] | np.ndarray] | None = None,
        exclude: Sequence[Sequence[int] | np.ndarray] | None = None,
        context: Sequence[int] | np.ndarray | None = None,
        category: Sequence[int] | np.ndarray | None = None,
    ) -> ScoreRequest:
        p = np.asarray(pos, np.int64)
        n = len(p)
        rows = [model.pop_row(t) for t in tiers] if tiers is not None else [0] * n
        rp, ri = _csr(recent, n)
        ep, ei = _csr(exclude, n)
        none = np.full(n, -1, np.int32)
        return cls(
            pos=p,
            pop_row=np.asarray(rows, np.int64),
            recent_ptr=rp,
            recent_idx=ri,
            exclude_ptr=ep,
            exclude_idx=ei,
            context=none if context is None else np.asarray(context, np.int32),
            category=none if category is None else np.asarray(category, np.int32),
        )


def exclusions(model: ScoringModel, req: ScoreRequest) -> tuple[np.ndarray, np.ndarray]:
    """What is never recommended to each row (CSR): training purchases, the request's
    exclusions and the context item (the rules' fallback lists skip them too)."""
    tp, ti = take_rows(model.ui_ptr, model.ui_idx, req.pos)
    n = len(req)
    extra = np.diff(req.exclude_ptr) + (req.context >= 0)
    if not extra.any():  # the usual request: the training purchases are the whole list
        return tp, ti
    ptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.diff(tp) + extra, out=ptr[1:])
    idx = np.empty(int(ptr[-1]), np.int32)
    for r in range(n):  # few rows have request exclusions; the rest is one slice each
        lo, a, b = ptr[r], tp[r], tp[r + 1]
        idx[lo : lo + b - a] = ti[a:b]
        e = req.exclude_idx[req.exclude_ptr[r] : req.exclude_ptr[r + 1]]
        idx[lo + b - a : lo + b - a + len(e)] = e
        if req.context[r] >= 0:
            idx[ptr[r + 1] - 1] = req.context[r]
    return ptr, idx


def vectors(model: ScoringModel, req: ScoreRequest) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ALS vector (own, or folded in from its real-time purchases) and a mask."""
    n, f = len(req), model.item_factors.shape[1]
    vecs = np.zeros((n, f), np.float32)
    known = req.pos >= 0
    vecs[known] = model.user_factors[req.pos[known]]
    has = known.copy()
    for r in np.flatnonzero(~known).tolist():
        recent = req.recent_idx[req.recent_ptr[r] : req.recent_ptr[r + 1]]
        if len(recent):
            vecs[r] = fold_in(
                model.item_factors, model.item_gram, recent, reg=model.reg, alpha=model.alpha
            )
            has[r] = True
    return vecs, has


def _als_lists(
    model: ScoringModel, req: ScoreRequest, vecs: np.ndarray, has: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ALS neighbour list (-1 padded) and its scores (or (0, 0): scored in the
    pass): the customer's ``depth`` nearest items (the precomputed row when there is one)
    when at most half of them can be excluded, else a FAISS search ``n_excluded + depth``
    deep. Depths are rounded up to a power of two and searched per
    depth, so a customer gets the same list alone and in any batch."""
    n = len(req)
    table = model.table
    base = table.shape[1] if table is not None else ALS_DEPTH
    n_ex = np.diff(req.exclude_ptr) + (req.context >= 0)
    known = req.pos >= 0
    n_ex[known] += (model.ui_ptr[req.pos[known] + 1] - model.ui_ptr[req.pos[known]]).astype(
        n_ex.dtype
    )
    # the same depth whether the row comes from the table or a search (a bundle without a
    # table ranks like one with it): ``base``, or ``base + n_excluded`` when exclusions
    # could eat more than half of it
    short = n_ex <= base // 2
    fetch = np.where(short, base, base + n_ex)
    fetch = np.where(req.category >= 0, base * CATEGORY_FETCH + n_ex, fetch)
    fetch = np.minimum(fetch, model.n_items)
    use_table = has & known & (req.category < 0) & short
    if table is None:
        use_table[:] = False
    search = np.flatnonzero(has & ~use_table)
    width = base if use_table.any() else 0
    if search.size:
        width = max(width, int(fetch[search].max()))
    items = np.full((n, width), -1, np.int32)
    stored = model.table_scores is not None and table is not None
    scores = np.zeros((n, width) if stored else (0, 0), np.float32)
    rows = np.flatnonzero(use_table)
    if rows.size and table is not None:
        items[rows, :base] = table[req.pos[rows]]
        if stored and model.table_scores is not None:
            scores[rows, :base] = model.table_scores[req.pos[rows]]
    if search.size:
        bucket = np.maximum(1, 2 ** np.ceil(np.log2(np.maximum(fetch[search], 1))).astype(np.int64))
        bucket = np.minimum(bucket, model.n_items)
        for b in np.unique(bucket).tolist():
            group = search[bucket == b]
            _, found = model.index.search(np.ascontiguousarray(vecs[group]), int(b))
            keep = np.arange(found.shape[1])[None, :] < fetch[group][:, None]
            found = np.where(keep, found, -1).astype(np.int32)[:, :width]
            items[group, : found.shape[1]] = found
            if stored:
                scores[group, : found.shape[1]] = dot_scores(
                    model.item_factors, np.ascontiguousarray(found), vecs[group]
                )
    return items, scores


def score_batch(model: ScoringModel, req: ScoreRequest, depth: int = OUT_DEPTH) -> CandidateBatch:
    """Every row's best ``depth`` candidates with blended scores, sources and anchors.

    The pass releases the GIL and scores each row alone: callers parallelise across batches
    (the API's workers, the email export's threads), never inside one."""
    vecs, has = vectors(model, req)
    items, stored = _als_lists(model, req, vecs, has)
    return CandidateBatch(
        *score_rows(
            has,
            vecs,
            items,
            stored,
            req.pos,
            model.ui_ptr,
            model.ui_idx,
            req.recent_ptr,
            req.recent_idx,
            req.exclude_ptr,
            req.exclude_idx,
            req.context,
            CONTEXT_WEIGHT,
            req.category,
            model.item_category,
            model.cp_ptr,
            model.cp_idx,
            model.cp_data,
            model.item_factors,
            req.pop_row,
            model.pop_items,
            model.pop_scores,
            model.pop_len,
            model.pop_src,
            model.weights,
            int(depth),
        )
    )


def top_k(cands: CandidateBatch, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` candidates of every row (item index, score; -1 / -inf padded): the
    model's answer without business rules."""
    ids = cands.item_idx[:, :k]
    return ids, np.where(ids >= 0, cands.score[:, :k], -np.inf).astype(np.float32)

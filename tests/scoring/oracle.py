"""The scoring formula written the simplest obviously-correct way (dense numpy, one customer):
the oracle the compiled library is tested against. Not used outside tests."""

from __future__ import annotations

import numpy as np

from patron.bundle import BundleData
from patron.scoring import POP_CANDIDATES, fold_in, popular_scopes
from patron.scoring.library import ALS_DEPTH, CATEGORY_FETCH, category_codes


def dense_scores(
    data: BundleData,
    u: int,
    *,
    tier: str | None = None,
    recent: list[int] | None = None,
    exclude: list[int] | None = None,
    context: int = -1,
    category: int = -1,
) -> tuple[list[int], np.ndarray]:
    """(items best first, their scores) of customer row ``u`` (-1 = not in the model)."""
    recent, exclude = list(recent or []), list(exclude or [])
    y = np.asarray(data.item_factors, np.float64)
    n_items = len(y)
    ui = data.user_items.tocsr()
    table = data.copurchase.tocsr()
    training = ui.indices[ui.indptr[u] : ui.indptr[u + 1]].tolist() if u >= 0 else []
    params = data.manifest.params
    if u >= 0:
        vec: np.ndarray | None = np.asarray(data.user_factors[u], np.float64)
    elif recent:
        gram = y.T @ y
        vec = fold_in(
            data.item_factors,
            gram,
            np.array(recent),
            reg=float(params.get("als.regularization", 0.01)),
            alpha=float(params.get("als.alpha", 1.0)),
        ).astype(np.float64)
    else:
        vec = None
    excluded = set(training) | set(exclude) | ({context} if context >= 0 else set())
    codes, _ = category_codes(data.catalog)

    def keep(i: int) -> bool:
        return i not in excluded and (category < 0 or codes[i] == category)

    cands: set[int] = set()
    listed: set[int] = set()
    als = np.zeros(n_items, np.float32)
    if vec is not None:
        als = (y @ vec).astype(np.float32)
        n_ex = len(training) + len(exclude) + (context >= 0)
        depth = ALS_DEPTH if n_ex <= ALS_DEPTH // 2 else ALS_DEPTH + n_ex
        if category >= 0:
            depth = ALS_DEPTH * CATEGORY_FETCH + n_ex
        listed = {i for i in np.argsort(-als, kind="stable")[: min(n_items, depth)] if keep(i)}
        cands |= listed
    history: dict[int, float] = {}
    if context >= 0:
        history[context] = max(1.0, float(len(recent) + len(training)))
    for j in recent + training:
        history.setdefault(j, 1.0)
    item = np.zeros(n_items, np.float64)
    item_cands: set[int] = set()
    for j, w in history.items():
        row = table[j]
        item[row.indices] += w * row.data
        item_cands |= {i for i in row.indices.tolist() if keep(i)}
    cands |= item_cands
    scopes = popular_scopes(data.popularity, n_items)
    plist = scopes.get(("tier", tier or ""), scopes[("overall", "")])
    pop = np.zeros(n_items, np.float32)
    for i, s in zip(plist.item_idx[:POP_CANDIDATES], plist.score[:POP_CANDIDATES], strict=True):
        pop[i] = s
        if keep(int(i)):
            cands.add(int(i))
    idx = np.array(sorted(cands), np.int64)
    if len(idx) == 0:
        return [], np.zeros(0, np.float32)
    w_als, w_item, w_pop = (
        data.manifest.blend.get(k, 0.0) for k in ("als", "copurchase", "popular")
    )
    if context >= 0:  # the item on screen matters at least as much as taste
        w_item = w_item + w_als
    total = np.zeros(len(idx), np.float64)
    if vec is None and not item_cands:  # nothing personal: popularity itself
        total = pop[idx].astype(np.float64)
    else:
        listed_als = np.zeros(n_items, np.float32)  # the ALS part: the listed items only
        for i in listed:
            listed_als[i] = als[i]
        for weight, part in ((w_als, listed_als), (w_item, item), (w_pop, pop)):
            if part is listed_als:  # normalised by the best of the ALS neighbour list
                best = max((float(als[i]) for i in listed), default=0.0) if vec is not None else 0
            else:
                best = part[idx].max()
            if best > 0:
                total += weight * part[idx] / best
    order = np.lexsort((idx, -total))
    return idx[order].tolist(), total[order].astype(np.float32)

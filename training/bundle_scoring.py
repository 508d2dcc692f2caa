"""Score customers straight from a loaded bundle with the served blend formula.

Used by ``patron recommend`` and the MLflow pyfunc model. Dense over the whole catalog in
batches (offline use); serving does the same over its candidate sets. The formula is the one
in training/blend.py: per source, divide by the customer's best eligible score, then weight.
Per-tier popularity needs the customer's tier (serving has it); here ``overall`` is used.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from patron.bundle import BundleData
from training.blend import normalise
from training.recommender import top_n


def overall_popularity(bundle: BundleData) -> np.ndarray:
    pop = bundle.popularity.filter(bundle.popularity["scope"] == "overall")
    scores = np.zeros(len(bundle.item_ids), np.float32)
    scores[pop["item_idx"].to_numpy()] = pop["score"].to_numpy()
    return scores


def recommend_from_bundle(
    bundle: BundleData,
    user_idx: np.ndarray,
    k: int = 10,
    exclude_bought: bool = True,
    batch: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (item indices, blend scores) for customers ``user_idx`` of the bundle."""
    weights = bundle.manifest.blend
    ui: sparse.csr_matrix = bundle.user_items.tocsr()
    table = bundle.copurchase.tocsr()
    pop = overall_popularity(bundle)
    user_idx = np.asarray(user_idx, dtype=np.int64)
    ids_out = np.full((len(user_idx), k), -1, np.int32)
    sc_out = np.full((len(user_idx), k), -np.inf, np.float32)
    for start in range(0, len(user_idx), batch):
        users = user_idx[start : start + batch]
        bought = ui[users]
        total = np.zeros((len(users), len(bundle.item_ids)), np.float32)
        if weights.get("als", 0.0):
            als = np.asarray(bundle.user_factors[users] @ bundle.item_factors.T)
            total += np.float32(weights["als"]) * normalise(als, bought)
        if weights.get("copurchase", 0.0):
            cp = np.asarray((bought @ table).toarray(), dtype=np.float32)
            total += np.float32(weights["copurchase"]) * normalise(cp, bought)
        if weights.get("popular", 0.0):
            ps = np.tile(pop, (len(users), 1))
            total += np.float32(weights["popular"]) * normalise(ps, bought)
        ids, sc = top_n(total, k, bought if exclude_bought else None)
        ids_out[start : start + len(users)] = ids
        sc_out[start : start + len(users)] = sc
    return ids_out, sc_out

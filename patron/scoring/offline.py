"""Offline use of the scoring library: a bundle's customers ranked from their training
history alone (``patron recommend``, the pyfunc model, evaluation, tuning)."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from patron.bundle import BundleData
from patron.scoring.index import HNSW_EF_SEARCH, set_ef_search
from patron.scoring.library import ScoreRequest, ScoringModel, score_batch, top_k


def recommend(
    model: ScoringModel, pos: np.ndarray, k: int, batch: int = 4_096
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (item index, score) of customers ``pos`` from their training history alone:
    ``score_batch`` in chunks (``patron recommend``, the pyfunc model, evaluation, tuning)."""
    pos = np.asarray(pos, np.int64)
    ids = np.full((len(pos), k), -1, np.int32)
    scores = np.full((len(pos), k), -np.inf, np.float32)
    for lo in range(0, len(pos), batch):
        part = pos[lo : lo + batch]
        got_ids, got_scores = top_k(score_batch(model, ScoreRequest.build(model, part)), k)
        ids[lo : lo + len(part), : got_ids.shape[1]] = got_ids
        scores[lo : lo + len(part), : got_ids.shape[1]] = got_scores
    return ids, scores


def load_scoring(data: BundleData, bundle_dir: Path | None = None) -> ScoringModel:
    """The scoring model of a loaded bundle, with the bundle's own FAISS index when it has one
    (searched as serving searches it), so offline answers are the API's."""
    index = None
    if bundle_dir is not None and (Path(bundle_dir) / "faiss.index").is_file():
        index = faiss.read_index(str(Path(bundle_dir) / "faiss.index"))
        set_ef_search(index, HNSW_EF_SEARCH)
    return ScoringModel.from_bundle(data, index)

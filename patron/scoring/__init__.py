"""The one scoring library (see patron/scoring/library.py): candidates and their blended
scores for a batch of customers, shared by serving and training; neither imports the other."""

from patron.scoring.foldin import fold_in, fold_in_batch
from patron.scoring.library import (
    POP_CANDIDATES,
    POPULAR_DEPTH,
    Popular,
    ScoreRequest,
    ScoringModel,
    category_codes,
    exclusions,
    popular_scopes,
    score_batch,
    top_k,
)
from patron.scoring.offline import load_scoring, recommend
from patron.scoring.types import CandidateBatch, CandidateSet, Source

__all__ = [
    "POPULAR_DEPTH",
    "POP_CANDIDATES",
    "CandidateBatch",
    "CandidateSet",
    "Popular",
    "ScoreRequest",
    "ScoringModel",
    "Source",
    "category_codes",
    "exclusions",
    "fold_in",
    "fold_in_batch",
    "load_scoring",
    "popular_scopes",
    "recommend",
    "score_batch",
    "top_k",
]

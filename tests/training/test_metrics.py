"""Metric definitions checked against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import sparse

from training.metrics import catalog_coverage, ranking_metrics


def test_metrics_hand_computed() -> None:
    # user 0: truth {1, 3, 5}; picks [1, 2, 3] -> hits at ranks 1 and 3
    # user 1: truth {0};       picks [4, 0, -1] -> hit at rank 2 (list padded)
    # user 2: truth {};        not evaluated
    truth = sparse.csr_matrix((np.ones(4), ([0, 0, 0, 1], [1, 3, 5, 0])), shape=(3, 6))
    recs = np.array([[1, 2, 3], [4, 0, -1], [0, 1, 2]])
    m = ranking_metrics(recs, truth, k=3)

    d = [1 / math.log(2), 1 / math.log(3), 1 / math.log(4)]
    ndcg0 = (d[0] + d[2]) / (d[0] + d[1] + d[2])
    ndcg1 = d[1] / d[0]
    ap0 = (1 / 1 + 2 / 3) / 3
    ap1 = (1 / 2) / 1
    assert m["users"] == 2
    assert m["ndcg@3"] == pytest.approx((ndcg0 + ndcg1) / 2)
    assert m["map"] == pytest.approx((ap0 + ap1) / 2)
    assert m["precision@3"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert m["recall@3"] == pytest.approx((2 / 3 + 1 / 1) / 2)


def test_perfect_and_empty_lists() -> None:
    truth = sparse.csr_matrix(np.array([[1, 1, 0, 0]], dtype=np.float32))
    assert ranking_metrics(np.array([[0, 1]]), truth, k=2)["ndcg@2"] == pytest.approx(1.0)
    assert ranking_metrics(np.array([[-1, -1]]), truth, k=2)["ndcg@2"] == 0.0


def test_coverage() -> None:
    assert catalog_coverage(np.array([[0, 1], [1, -1]]), 4) == 0.5

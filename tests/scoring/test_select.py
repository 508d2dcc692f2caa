"""The ranking key and the selection of the best ``depth`` (patron/scoring/select.py)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from patron.scoring.select import _rank_key, _smallest

totals = st.lists(
    st.one_of(
        st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 1e-30, -1e-30, 3.4e38, -3.4e38]),
        st.floats(-10, 10, allow_nan=False, width=32),
    ),
    min_size=1,
    max_size=300,
)


def _keys(values: list[float]) -> tuple[np.ndarray, np.ndarray]:
    total = np.array(values, np.float32)
    bits = total.view(np.uint32)
    keys = np.array([_rank_key(total[i], bits[i], i) for i in range(len(total))], np.uint64)
    return total, keys


@settings(max_examples=200, deadline=None)
@given(totals)
def test_key_order_is_total_descending_then_item(values: list[float]) -> None:
    total, keys = _keys(values)
    expected = sorted(range(len(total)), key=lambda i: (-float(total[i]), i))
    assert np.argsort(keys, kind="stable").tolist() == expected


@settings(max_examples=200, deadline=None)
@given(totals, st.integers(1, 300), st.randoms(use_true_random=False))
def test_smallest_puts_the_best_m_first(values: list[float], m: int, rnd) -> None:  # type: ignore[no-untyped-def]
    total, keys = _keys(values)
    perm = list(range(len(keys)))
    rnd.shuffle(perm)
    keys, slots = keys[perm].copy(), np.array(perm, np.int64)
    m = min(m, len(keys))
    expected = set(sorted(range(len(total)), key=lambda i: (-float(total[i]), i))[:m])
    _smallest(keys, slots, len(keys), m)
    assert set(slots[:m].tolist()) == expected
    assert sorted(slots.tolist()) == list(range(len(total)))  # a permutation: nothing lost

"""The packed per-item words the rules kernel reads: the bit layout, named once, and the packer.

Each catalog item is two int64 words (``item_info[item, ITEM_WORD]`` and
``item_info[item, BOOST_WORD]``), so the kernel touches the item with one memory access
instead of one per array (the catalog is far bigger than the caches):

- the item word: ``allowed | min tier rank << MIN_TIER_SHIFT | category << CATEGORY_SHIFT``
  (allowed = in stock if required and not blocklisted; the min tier rank in the rule set's
  order; the category code, unknown = the last code);
- the boost word: bit ``b`` = boost ``b``'s catalog-only condition holds for the item, for
  the first ``BOOST_BITS`` boosts (the kernel reads the rest from the boost matrix).

serving/rules/kernel.py unpacks with these names; numba freezes module-level ints into the
compiled kernel and its on-disk cache is keyed on kernel.py alone, so after changing a value
here touch kernel.py (or clear its ``__pycache__``) so that the kernel is recompiled.
"""

from __future__ import annotations

import numpy as np

ITEM_WORD = 0  # column of the item word in item_info
BOOST_WORD = 1  # column of the boost word in item_info

ALLOWED_BIT = 1  # item word: the item may be shown
MIN_TIER_SHIFT = 1  # item word: minimum tier rank, MIN_TIER_MASK bits from here
MIN_TIER_MASK = 0xFFFF
CATEGORY_SHIFT = 17  # item word: category code, CATEGORY_MASK bits from here
CATEGORY_MASK = 0xFFFFFFFF
BOOST_BITS = 64  # boost word: boosts with a bit (boost b = bit b)


def pack_item_info(
    item_ok: np.ndarray, min_rank: np.ndarray, cat: np.ndarray, boost_static: np.ndarray
) -> np.ndarray:
    """int64 (n_items, 2): the item word and the boost word of every item (see above).

    ``item_ok`` bool, ``min_rank`` and ``cat`` int per item, ``boost_static`` bool
    (n_items, n_boosts).
    """
    bits = np.zeros(boost_static.shape[0], np.uint64)
    for b in range(min(boost_static.shape[1], BOOST_BITS)):
        bits |= boost_static[:, b].astype(np.uint64) << np.uint64(b)
    info = np.empty((boost_static.shape[0], 2), np.int64)
    info[:, ITEM_WORD] = (
        np.where(item_ok, ALLOWED_BIT, 0).astype(np.int64)
        | (min_rank.astype(np.int64) & MIN_TIER_MASK) << MIN_TIER_SHIFT
        | (cat.astype(np.int64) & CATEGORY_MASK) << CATEGORY_SHIFT
    )
    info[:, BOOST_WORD] = bits.view(np.int64)
    return info

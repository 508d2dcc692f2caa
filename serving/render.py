"""JSON bodies of recommendation answers, rendered straight from the picks.

Building a ``RecommendationResponse`` (one validation over every pick) and dumping it cost
more per request than the recommendation's rules pass. The API renders the same bytes
without the model: the scalar fields and every string go through ``pydantic_core.to_json``
(the serializer the model uses, so escaping and float formatting are the model's), and the
fixed fragments — an item's ``{"item_id":...,"score":`` head, a combination of reasons — are
encoded once and reused. tests/serving/test_render.py checks the bytes against
``RecommendationResponse`` for generated answers (odd strings, extreme floats, many reasons);
the FastAPI route and the hot path (serving/hot_path.py) both answer with these bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from pydantic_core import to_json

from serving.rules.engine import COPURCHASE_REASON, BatchPicks

__all__ = ["Answer", "ItemsJson", "RenderedResult", "batch_body", "body", "picks_json"]

_CACHE_MAX = 200_000  # cached (reason combination, anchor) fragments per reason table


def _js(value: object) -> bytes:
    """One value as the response model serializes it (inf/nan as null, as pydantic does)."""
    return to_json(value, inf_nan_mode="null")


class Answer(Protocol):
    """What an answer needs besides its customer: RecResult (one-customer path) or
    RenderedResult (batch path)."""

    tier: str
    segment: str | None
    rules_version: str
    fallback: str | None

    def items_json(self) -> bytes: ...


class RenderedResult:
    """A batch row's answer with its items already rendered (a JSON array)."""

    __slots__ = ("_items", "fallback", "rules_version", "segment", "tier")

    def __init__(
        self, tier: str, segment: str | None, rules_version: str, fallback: str | None, items: bytes
    ) -> None:
        self.tier, self.segment, self.rules_version = tier, segment, rules_version
        self.fallback, self._items = fallback, items

    def items_json(self) -> bytes:
        return self._items


def picks_json(picks: Sequence[object]) -> bytes:
    """The items array of picks with ``item_id``, ``score`` and ``reasons`` attributes."""
    return _js(
        [
            {"item_id": p.item_id, "score": p.score, "reasons": p.reasons}  # type: ignore[attr-defined]
            for p in picks
        ]
    )


def body(
    customer_id: str,
    answer: Answer,
    model_version: str,
    variant: str,
    degraded: bool,
) -> bytes:
    """The ``RecommendationResponse`` JSON of one answer (same field order, same bytes)."""
    head = _js(
        {
            "customer_id": customer_id,
            "tier": answer.tier,
            "segment": answer.segment,
            "model_version": model_version,
            "variant": variant,
            "degraded": degraded,
            "rules_version": answer.rules_version,
        }
    )
    return b"".join((head[:-1], b',"items":', answer.items_json(), b"}"))


def batch_body(bodies: Sequence[bytes]) -> bytes:
    """``BatchResponse`` JSON from the rendered answers, in order."""
    return b"".join((b'{"results":[', b",".join(bodies), b"]}"))


class ItemsJson:
    """Renders the items arrays of a batch's picks; one per model (fragments cached)."""

    def __init__(self, item_ids: Sequence[str]) -> None:
        self._ids = item_ids
        # '{"item_id":<id>,"score":' of every item, encoded once (~0.5 us each)
        self._heads = [b'{"item_id":' + _js(i) + b',"score":' for i in item_ids]
        self._reasons: dict[int, tuple[tuple[str, ...], dict[bytes, bytes]]] = {}

    def _reason_cache(self, out: BatchPicks) -> dict[bytes, bytes]:
        entry = self._reasons.get(id(out.reason_table))
        if entry is None or entry[0] is not out.reason_table:
            entry = (out.reason_table, {})
            self._reasons[id(out.reason_table)] = entry
            while len(self._reasons) > 8:
                self._reasons.pop(next(iter(self._reasons)))
        if len(entry[1]) > _CACHE_MAX:
            entry[1].clear()
        return entry[1]

    def _reasons_json(self, out: BatchPicks, ids: list[int], anchor: int) -> bytes:
        texts = [
            out.copurchase_template.format(anchor=self._ids[anchor])
            if v == COPURCHASE_REASON
            else out.reason_table[v]
            for v in ids
            if v >= 0
        ]
        return b',"reasons":' + _js(texts) + b"}"

    def rows(self, out: BatchPicks) -> list[bytes]:
        """The items array of every row of ``out`` (as ``BatchPicks.all_reasons`` decodes)."""
        n, kk = out.item_idx.shape
        if n == 0:
            return []
        on = np.arange(kk)[None, :] < out.count[:, None]  # (n, kk): the row's picks
        rid = out.reason_ids[:, :kk][on]  # (m, R)
        # a pick's reasons: its combination of reason ids and, with the co-purchase reason,
        # its anchor; the key is those numbers' bytes (exact, one C call for the batch)
        anchor = np.where((rid == COPURCHASE_REASON).any(axis=1), out.anchor_idx[on], -1)
        key_arr = np.ascontiguousarray(np.column_stack([rid, anchor]), dtype=np.int32)
        void = key_arr.view(np.dtype((np.void, 4 * key_arr.shape[1]))).ravel()
        keys: list[bytes] = void.tolist()  # type: ignore[assignment]
        cache = self._reason_cache(out)
        frags = [cache.get(key) for key in keys]
        if None in frags:
            rid_l, anchor_l = rid.tolist(), anchor.tolist()
            for j, f in enumerate(frags):
                if f is None:
                    f = cache.get(keys[j]) or self._reasons_json(out, rid_l[j], anchor_l[j])
                    frags[j] = cache[keys[j]] = f
        heads = self._heads
        # the model's float formatting, one call for the batch (a float's JSON has no comma)
        scores = _js(out.score[on].tolist())[1:-1].split(b",") if len(keys) else []
        pieces = [
            heads[i] + s + f
            for i, s, f in zip(out.item_idx[on].tolist(), scores, frags, strict=True)
        ]
        ends = np.cumsum(out.count).tolist()
        return [
            b"[" + b",".join(pieces[lo:hi]) + b"]" for lo, hi in zip([0, *ends], ends, strict=False)
        ]

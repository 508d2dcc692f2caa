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
from typing import Any, Protocol

import numpy as np
from pydantic_core import to_json

from serving.rules.engine import COPURCHASE_REASON, BatchPicks
from serving.rules.models import split_anchor_template

__all__ = ["Answer", "ItemsJson", "RenderedResult", "batch_body", "body", "picks_json"]

_CACHE_MAX = 100_000  # cached reason combinations per reason table (a handful in practice)


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

    def served_items(self, item_ids: Sequence[str]) -> list[str]:
        """The ids of the items served, in order (what attribution records)."""
        ...


class RenderedResult:
    """A batch row's answer with its items already rendered (a JSON array) and their
    catalog positions."""

    __slots__ = ("_idx", "_items", "fallback", "rules_version", "segment", "tier")

    def __init__(
        self,
        tier: str,
        segment: str | None,
        rules_version: str,
        fallback: str | None,
        items: bytes,
        item_idx: np.ndarray,
    ) -> None:
        self.tier, self.segment, self.rules_version = tier, segment, rules_version
        self.fallback, self._items, self._idx = fallback, items, item_idx

    def items_json(self) -> bytes:
        return self._items

    def served_items(self, item_ids: Sequence[str]) -> list[str]:
        return [item_ids[i] for i in self._idx.tolist()]


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
    recommendation_id: str,
) -> bytes:
    """The ``RecommendationResponse`` JSON of one answer (same field order, same bytes)."""
    head = _js(
        {
            "recommendation_id": recommendation_id,
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


def _esc(text: str) -> bytes:
    """A string's JSON escape without the quotes (JSON escapes character by character)."""
    return _js(text)[1:-1]


class ItemsJson:
    """Renders the items arrays of a batch's picks; one per model (fragments cached)."""

    def __init__(self, item_ids: Sequence[str]) -> None:
        self._ids = item_ids
        # every item id's JSON escape and '{"item_id":<id>,"score":', encoded once
        self._esc_ids = [_esc(i) for i in item_ids]
        self._heads = [b'{"item_id":"' + e + b'","score":' for e in self._esc_ids]
        self._reasons: dict[int, tuple[tuple[str, ...], dict[bytes, _Frag]]] = {}

    def _reason_cache(self, out: BatchPicks) -> dict[bytes, _Frag]:
        entry = self._reasons.get(id(out.reason_table))
        if entry is None or entry[0] is not out.reason_table:
            entry = (out.reason_table, {})
            self._reasons[id(out.reason_table)] = entry
            while len(self._reasons) > 8:
                self._reasons.pop(next(iter(self._reasons)))
        if len(entry[1]) > _CACHE_MAX:
            entry[1].clear()
        return entry[1]

    def _combo(self, out: BatchPicks, ids: list[int]) -> _Frag:
        """The ``,"reasons":[...]}`` tail of a pick with these reason ids: bytes, or (before,
        after) the anchor's escaped id when one reason is the co-purchase template, or None
        (decode each pick: a template of another form, several anchored reasons)."""
        ids = [v for v in ids if v >= 0]
        table = out.reason_table
        cp = [j for j, v in enumerate(ids) if v == COPURCHASE_REASON]
        if not cp:
            return b',"reasons":' + _js([table[v] for v in ids]) + b"}"
        split = split_anchor_template(out.copurchase_template)
        if len(cp) > 1 or split is None:
            return None
        j = cp[0]
        before = [_js(table[v]) for v in ids[:j]]
        after = [_js(table[v]) for v in ids[j + 1 :]]
        head = b',"reasons":[' + b"".join(x + b"," for x in before) + b'"' + _esc(split[0])
        tail = _esc(split[1]) + b'"' + b"".join(b"," + x for x in after) + b"]}"
        return head, tail

    def _decoded(self, out: BatchPicks, ids: list[int], anchor: int) -> bytes:
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
        rid = np.ascontiguousarray(out.reason_ids[:, :kk][on], dtype=np.int32)  # (m, R)
        if len(rid) == 0:
            return [b"[]"] * n
        # a pick's reasons: its combination of reason ids (keyed by their bytes, one C call
        # for the batch) and, with the co-purchase reason, its anchor
        void = rid.view(np.dtype((np.void, 4 * rid.shape[1]))).ravel()
        keys: list[bytes] = void.tolist()  # type: ignore[assignment]
        cache = self._reason_cache(out)
        combos = [cache.get(key, _MISSING) for key in keys]
        if _MISSING in combos:
            rid_l = rid.tolist()
            for j, c in enumerate(combos):
                if c is _MISSING:
                    c = cache.get(keys[j], _MISSING)
                    if c is _MISSING:
                        c = cache[keys[j]] = self._combo(out, rid_l[j])
                    combos[j] = c
        heads, esc = self._heads, self._esc_ids
        items = out.item_idx[on].tolist()
        anchors = out.anchor_idx[on].tolist()
        # the model's float formatting, one call for the batch (a float's JSON has no comma)
        scores = _js(out.score[on].tolist())[1:-1].split(b",")
        pieces = []
        for i, sc, c, a, ids in zip(items, scores, combos, anchors, rid, strict=True):
            if type(c) is bytes:
                pieces.append(heads[i] + sc + c)
            elif c is not None:
                pieces.append(b"".join((heads[i], sc, c[0], esc[a], c[1])))  # type: ignore[index]
            else:
                pieces.append(heads[i] + sc + self._decoded(out, ids.tolist(), a))
        ends = np.cumsum(out.count).tolist()
        return [
            b"[" + b",".join(pieces[lo:hi]) + b"]" for lo, hi in zip([0, *ends], ends, strict=False)
        ]


_Frag = bytes | tuple[bytes, bytes] | None
_MISSING: Any = object()

"""serving/render.py writes the bytes ``RecommendationResponse`` would: for generated answers
(odd strings, extreme floats), and for real batches of the rendered path against the picks of
``recommend_batch``."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from serving import render
from serving.model import LoadedModel, load_model
from serving.recommend import recommend_batch, recommend_batch_rendered
from serving.routes.schemas import BatchResponse, RecommendationResponse
from serving.rules.engine import BatchPicks
from serving.rules.loader import load_rules
from serving.service import Pick, RecResult
from tests.serving.test_batch import DEFAULT_RULES, _rows

RESPONSE = TypeAdapter(RecommendationResponse)
texts = st.text(max_size=12)  # any unicode: quotes, backslashes, control characters
floats = st.floats(allow_nan=True, allow_infinity=True) | st.floats(-2, 2)


REC_ID = "20261207-" + "0f" * 16


def _model_bytes(
    cid: str, res: RecResult, version: str, variant: str, degraded: bool, rec_id: str = REC_ID
) -> bytes:
    """The response as the model serializes it (what FastAPI sends for a returned model)."""
    m = RecommendationResponse.model_validate(
        {
            "recommendation_id": rec_id,
            "customer_id": cid,
            "tier": res.tier,
            "segment": res.segment,
            "model_version": version,
            "variant": variant,
            "degraded": degraded,
            "rules_version": res.rules_version,
            "items": [
                {"item_id": p.item_id, "score": p.score, "reasons": p.reasons} for p in res.items
            ],
        }
    )
    return RESPONSE.dump_json(m)


@settings(max_examples=300, deadline=None)
@given(
    cid=texts,
    tier=texts,
    segment=st.none() | texts,
    version=texts,
    variant=st.sampled_from(["champion", "challenger"]),
    degraded=st.booleans(),
    rules_version=texts,
    picks=st.lists(st.tuples(texts, floats, st.lists(texts, max_size=4)), max_size=12),
    rec_id=texts,
)
def test_body_is_the_response_model_bytes(  # type: ignore[no-untyped-def]
    cid, tier, segment, version, variant, degraded, rules_version, picks, rec_id
) -> None:
    res = RecResult(tier, segment, [Pick(i, s, r) for i, s, r in picks], rules_version)
    got = render.body(cid, res, version, variant, degraded, rec_id)
    assert got == _model_bytes(cid, res, version, variant, degraded, rec_id)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_batch_rows_decode_as_all_reasons(data) -> None:  # type: ignore[no-untyped-def]
    """``ItemsJson.rows`` on arbitrary batch picks = the picks decoded by ``all_reasons``."""
    n = data.draw(st.integers(1, 6))
    kk = data.draw(st.integers(1, 8))
    n_r = data.draw(st.integers(1, 5))
    n_items = 30
    ids = [data.draw(texts) + f"#{j}" for j in range(n_items)]
    table = tuple(data.draw(st.lists(texts, min_size=1, max_size=6)))
    template = data.draw(
        st.sampled_from(
            [
                "bought together with {anchor}",
                '{anchor}! "quoted" \\ é',
                "x",  # no field
                "a {{b}} {anchor} c}}",  # escaped braces around the field
                "{anchor} and {anchor}",  # two fields: decoded pick by pick
                "{anchor!r}",  # a conversion: decoded pick by pick
            ]
        )
    )
    ints = st.integers(-1, len(table) - 1)
    rid = np.array(data.draw(st.lists(ints, min_size=n * kk * n_r, max_size=n * kk * n_r)))
    out = BatchPicks(
        item_idx=np.array(
            data.draw(st.lists(st.integers(0, n_items - 1), min_size=n * kk, max_size=n * kk)),
            np.int32,
        ).reshape(n, kk),
        score=np.array(
            data.draw(st.lists(floats, min_size=n * kk, max_size=n * kk)), np.float32
        ).reshape(n, kk),
        source=np.zeros((n, kk), np.int8),
        anchor_idx=np.array(
            data.draw(st.lists(st.integers(0, n_items - 1), min_size=n * kk, max_size=n * kk)),
            np.int32,
        ).reshape(n, kk),
        reason_ids=rid.astype(np.int32).reshape(n, kk, n_r),
        count=np.array(data.draw(st.lists(st.integers(0, kk), min_size=n, max_size=n)), np.int64),
        reason_table=table,
        copurchase_template=template,
        rules_version="v",
        group=np.zeros((n, kk), np.int8),
    )
    renderer = render.ItemsJson(ids)
    for _ in range(2):  # the second pass answers from the fragment caches
        got = renderer.rows(out)
        reasons = out.all_reasons(ids)
        for r in range(n):
            c = int(out.count[r])
            picks = [
                Pick(ids[i], s, reasons[r][j])
                for j, (i, s) in enumerate(
                    zip(out.item_idx[r, :c].tolist(), out.score[r, :c].tolist(), strict=True)
                )
            ]
            assert got[r] == render.picks_json(picks)


@pytest.fixture(scope="module")
def model(bundle_dir: Path) -> LoadedModel:
    return load_model(bundle_dir)


@pytest.mark.parametrize("rules_file", ["mechanics", "default"])
@pytest.mark.parametrize("k", [1, 10])
def test_rendered_batch_equals_recommend_batch(model: LoadedModel, rules_file: str, k: int) -> None:
    rules = load_rules(DEFAULT_RULES) if rules_file == "default" else load_rules()
    ids, rows, excludes = _rows(70, seed=k)
    now = time.time()
    want = recommend_batch(model, ids, rows, k, rules, excludes, now=now)
    got = recommend_batch_rendered(model, ids, rows, k, rules, excludes, now=now)
    assert sum(len(w.items) for w in want) > 0
    for cid, w, g in zip(ids, want, got, strict=True):
        assert (g.tier, g.segment, g.rules_version, g.fallback) == (
            w.tier,
            w.segment,
            w.rules_version,
            w.fallback,
        )
        assert render.body(cid, g, "7", "champion", False, REC_ID) == _model_bytes(
            cid, w, "7", "champion", False
        )
        assert g.served_items(model.item_id_list) == [p.item_id for p in w.items]
    bodies = [
        render.body(c, g, "7", "challenger", True, REC_ID) for c, g in zip(ids, got, strict=True)
    ]
    model_batch = BatchResponse.model_validate_json(render.batch_body(bodies))
    assert TypeAdapter(BatchResponse).dump_json(model_batch) == render.batch_body(bodies)

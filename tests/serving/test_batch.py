"""The batched recommendation path equals the one-customer path, and the API's micro-batcher
coalesces concurrent requests without changing any answer."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from features.online import CustomerOnline
from serving import service
from serving.batch import RecBatcher
from serving.model import LoadedModel, load_model
from serving.recommend import recommend_batch
from serving.render import Answer
from serving.rules.loader import LoadedRules, load_rules
from tests.serving.helpers import customer_id, item_id

TIERS = ("bronze", "silver", "gold", "platinum")
SEGMENTS = ("regular", "at_risk", "new", "high_value")
DEFAULT_RULES = Path(__file__).resolve().parents[2] / "config" / "rules.yaml"


@pytest.fixture(scope="module")
def model(bundle_dir: Path) -> LoadedModel:
    return load_model(bundle_dir)


def _rows(n: int, seed: int = 0) -> tuple[list[str], list[CustomerOnline | None], list[list[str]]]:
    """Known customers, unknown ones with purchases (fold-in) and without (popular), Redis
    rows missing (degraded), recent purchases, request exclusions."""
    rng = np.random.default_rng(seed)
    now = time.time()
    ids, rows, excludes = [], [], []
    for u in range(n):
        cid = customer_id(u) if u % 5 else f"new-{u}"
        recent = tuple(
            (item_id(int(j)), now - float(rng.uniform(0, 90)) * 86_400)
            for j in rng.choice(240, int(rng.integers(0, 6)), replace=False)
        )
        row: CustomerOnline | None = CustomerOnline(
            cid,
            known=True,
            tier=TIERS[u % 4],
            segment=SEGMENTS[(u // 4) % 4],
            churn_risk=float(rng.random()),
            clv_band=("low", "medium", "high")[u % 3],
            typical_spend=float(rng.uniform(5, 80)),
            recent_items=recent,
        )
        if u % 7 == 3:
            row = None  # Redis unusable: bundle-only answer
        ids.append(cid)
        rows.append(row)
        excludes.append([item_id(int(j)) for j in rng.choice(240, int(rng.integers(0, 4)))])
    return ids, rows, excludes


@pytest.mark.parametrize("rules_file", ["mechanics", "default"])
@pytest.mark.parametrize("k", [1, 10, 37])
def test_batch_equals_single_customer_path(
    model: LoadedModel, rules_file: str, k: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = load_rules(DEFAULT_RULES) if rules_file == "default" else load_rules()
    ids, rows, excludes = _rows(70, seed=k)  # >= 64: the batch-only code paths run
    now = time.time()
    got = recommend_batch(model, ids, rows, k, rules, excludes, now=now)
    monkeypatch.setattr(time, "time", lambda: now)  # recent-purchase ages as in the batch
    fallbacks = set()
    for cid, row, ex, res in zip(ids, rows, excludes, got, strict=True):
        want = service.recommend(model, cid, row, k, exclude=ex, rules=rules)
        assert [p.item_id for p in res.items] == [p.item_id for p in want.items], cid
        assert [p.reasons for p in res.items] == [p.reasons for p in want.items], cid
        assert np.allclose([p.score for p in res.items], [p.score for p in want.items]), cid
        assert (res.tier, res.segment, res.rules_version, res.fallback) == (
            want.tier,
            want.segment,
            want.rules_version,
            want.fallback,
        )
        assert not set(ex) & {p.item_id for p in res.items}
        fallbacks.add(res.fallback)
    assert fallbacks == {None, "fold_in", "popular"}  # every candidate plan was exercised


class _Reader:
    """The gateway's batch read over fixed rows; records the size of every read."""

    def __init__(self, rows: dict[str, CustomerOnline | None]) -> None:
        self.rows = rows
        self.calls: list[int] = []

    async def __call__(self, ids: Sequence[str]) -> list[CustomerOnline | None]:
        self.calls.append(len(ids))
        await asyncio.sleep(0.001)  # a network round trip
        return [self.rows.get(c) for c in ids]


def test_batcher_coalesces_concurrent_requests(model: LoadedModel) -> None:
    rules = load_rules()
    ids, rows, excludes = _rows(80, seed=3)
    reader = _Reader(dict(zip(ids, rows, strict=True)))
    batcher = RecBatcher(reader, service.recommend, max_batch=16)

    async def run() -> list[tuple[Answer, CustomerOnline | None]]:
        return await asyncio.gather(
            *(
                batcher.recommend(model, rules, c, 10 if i % 3 else 4, ex)
                for i, (c, ex) in enumerate(zip(ids, excludes, strict=True))
            )
        )

    out = asyncio.run(run())
    assert sum(reader.calls) == len(ids) and max(reader.calls) == 16
    assert batcher.batches == len(reader.calls) < len(ids) // 4
    for i, (cid, row, ex, (res, got_row)) in enumerate(zip(ids, rows, excludes, out, strict=True)):
        assert got_row is row
        k = 10 if i % 3 else 4
        want = service.recommend(model, cid, row, k, exclude=ex, rules=rules)
        assert res.items_json() == want.items_json(), cid  # the rendered answer, byte for byte
        assert (res.tier, res.segment, res.fallback) == (want.tier, want.segment, want.fallback)


def test_batcher_lone_request_and_failure_isolation(
    model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lone request is a batch of one (the batch function, not the one-by-one fallback);
    when a batch fails, each request is answered alone,
    so only the request that really fails gets the error."""
    rules: LoadedRules = load_rules()
    ids, rows, _ = _rows(6, seed=4)
    reader = _Reader(dict(zip(ids, rows, strict=True)))
    calls: list[str] = []

    def single(m, cid, row, k, **kw):  # type: ignore[no-untyped-def]
        calls.append(cid)
        if cid == ids[2]:
            raise ValueError("boom")
        return service.recommend(m, cid, row, k, **kw)

    batcher = RecBatcher(reader, single, max_batch=64)

    async def lone() -> Answer:
        res, _ = await batcher.recommend(model, rules, ids[1], 5)
        return res

    assert len(json.loads(asyncio.run(lone()).items_json())) == 5
    assert reader.calls == [1] and calls == []
    calls.clear()

    import serving.batch as batch_mod

    def broken(*a, **kw):  # type: ignore[no-untyped-def]
        raise RuntimeError("vectorised path failed")

    monkeypatch.setattr(batch_mod, "recommend_batch_rendered", broken)

    async def many() -> list[object]:
        return await asyncio.gather(
            *(batcher.recommend(model, rules, c, 5) for c in ids), return_exceptions=True
        )

    res = asyncio.run(many())
    assert isinstance(res[2], ValueError)
    assert all(
        isinstance(r, tuple) and len(json.loads(r[0].items_json())) == 5
        for i, r in enumerate(res)
        if i != 2
    )
    assert sorted(calls) == sorted(ids)


def test_batcher_survives_a_failing_read(model: LoadedModel) -> None:
    """If the batch read itself raises (a bug: the gateway answers None rows when Redis is
    down), the waiting requests get the error instead of hanging, and the next ones work."""
    rules = load_rules()
    ids, rows, _ = _rows(5, seed=6)
    good = _Reader(dict(zip(ids, rows, strict=True)))
    broken = [True]

    async def read(batch_ids: Sequence[str]) -> list[CustomerOnline | None]:
        if broken[0]:
            raise RuntimeError("reader bug")
        return await good(batch_ids)

    batcher = RecBatcher(read, service.recommend)

    async def run() -> list[object]:
        first = await asyncio.gather(
            *(batcher.recommend(model, rules, c, 3) for c in ids), return_exceptions=True
        )
        broken[0] = False
        second = await asyncio.wait_for(batcher.recommend(model, rules, ids[0], 3), 5)
        return [*first, second]

    out = asyncio.run(run())
    assert all(isinstance(r, RuntimeError) for r in out[:5])
    assert isinstance(out[5], tuple) and len(json.loads(out[5][0].items_json())) == 3


def test_warm_model_compiles_what_the_batch_path_runs(
    model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``warm_model`` calls the scoring pass's kernels with the argument types a batch
    (known, folded-in, unknown customers) calls them with, so no request pays a numba
    compilation; checked on the types themselves, whatever earlier tests compiled."""
    import numba

    import patron.scoring.library as library
    from serving.recommend import recommend_batch_rendered, warm_model

    seen: list[tuple[str, tuple[object, ...]]] = []
    names = ("score_rows", "take_rows", "dot_scores")

    def recording(name: str):  # type: ignore[no-untyped-def]
        kernel = getattr(library, name)

        def call(*args):  # type: ignore[no-untyped-def]
            seen.append((name, tuple(numba.typeof(a) for a in args)))
            return kernel(*args)

        return call

    for name in names:
        monkeypatch.setattr(library, name, recording(name))
    warm_model(model)
    warmed = set(seen)
    assert "score_rows" in {name for name, _ in warmed}
    seen.clear()
    ids, rows, excludes = _rows(20, seed=9)
    assert recommend_batch_rendered(model, ids, rows, 10, load_rules(), excludes)
    assert seen and set(seen) <= warmed

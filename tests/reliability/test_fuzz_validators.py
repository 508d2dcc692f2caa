"""Hypothesis on the validators: arbitrary frames into ``features.validation.validate``,
arbitrary JSON into the API request models and the events validator, arbitrary customer
tables into ``pack_customers``. Each either answers or raises its documented input error
(InputError / ValidationError / ValueError), never anything else, and never loses a row."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing.parametric import column, dataframes
from pydantic import ValidationError

from features.io import InputError
from features.online import PACKED_FIELDS, pack_customers
from features.schemas import EVENTS
from features.validation import REASONS, validate
from serving.events import check_events
from serving.routes.schemas import BatchRequest, EventIn, EventsRequest

pytestmark = pytest.mark.reliability

NOW = datetime(2025, 6, 1, tzinfo=UTC)
EVENT_COLS = ("customer_id", "item_id", "ts", "quantity", "unit_price", "event_type", "order_id")
# dtypes an events file can really arrive with (CSV strings, typed Parquet, JSON numbers)
INPUT_DTYPES = [
    pl.String,
    pl.Int64,
    pl.Int32,
    pl.UInt64,
    pl.Float64,
    pl.Float32,
    pl.Boolean,
    pl.Date,
    pl.Datetime("us"),
    pl.Datetime("ms", "UTC"),
    pl.Null,
    pl.Categorical,
    pl.Decimal(10, 2),
    pl.List(pl.String),
]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@st.composite
def event_frames(draw: st.DrawFn) -> pl.DataFrame:
    names = draw(st.lists(st.sampled_from(EVENT_COLS), unique=True, min_size=1))
    cols = [column(n, dtype=draw(st.sampled_from(INPUT_DTYPES))) for n in names]
    return draw(dataframes(cols, max_size=12, allow_null=True))


@FUZZ
@given(frame=event_frames(), with_catalog=st.booleans())
def test_validate_never_crashes_and_keeps_every_row(
    frame: pl.DataFrame, with_catalog: bool
) -> None:
    catalog = pl.DataFrame({"item_id": ["a", "1", "i0001"]}) if with_catalog else None
    try:
        res = validate(frame, catalog=catalog, now=NOW)
    except InputError as exc:
        assert str(exc)  # a message that says what was wrong
        return
    assert res.accepted.height + res.quarantined.height == frame.height
    assert res.accepted.schema == pl.Schema(EVENTS)
    assert set(res.quarantined["reason"].to_list()) <= set(REASONS)
    assert res.summary["read"] == frame.height


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
EVENT_KEYS = (
    "customer_id",
    "item_id",
    "ts",
    "quantity",
    "unit_price",
    "type",
    "recommendation_id",
)
REC_ID = "20261207133-" + "ab" * 16
EVENT_VALUES = st.one_of(
    JSON,
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            *("purchase", "return", "impression", "click", "add_to_cart", "i0001", "c1"),
            *("2024-01-01T00:00:00Z", "NaN", "inf", REC_ID),
        ]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
)
RAW_EVENTS = st.dictionaries(
    st.one_of(st.sampled_from(EVENT_KEYS), st.text(max_size=6)), EVENT_VALUES, max_size=8
)


@FUZZ
@given(raw=st.lists(RAW_EVENTS, max_size=6))
def test_event_check_answers_every_payload(raw: list[dict[str, Any]]) -> None:
    """/v1/events' validator: one verdict per event, accepted ones are sound."""
    checked = check_events(raw, pl.Series("item_id", ["i0001", "i0002"]))
    events, verdicts = checked.events, checked.verdicts
    assert [v.index for v in verdicts] == list(range(len(raw)))
    signals = [o for _, o in checked.outcomes if o.type != "purchase"]
    assert len(events) + len(signals) <= sum(not v.errors for v in verdicts)
    for ev in events:
        assert ev.item_id in ("i0001", "i0002") and ev.quantity != 0 and ev.ts.tzinfo is not None
        assert (ev.quantity > 0) == (ev.type == "purchase")
    for i, o in checked.outcomes:  # outcomes only of accepted events naming an answer
        assert not verdicts[i].errors and raw[i].get("recommendation_id") == o.rec_id
        assert o.item_id in ("i0001", "i0002") or (o.item_id is None and o.type == "impression")


@FUZZ
@given(payload=JSON | st.dictionaries(st.sampled_from(["customer_ids", "k", "events"]), JSON))
def test_request_models_accept_or_reject_cleanly(payload: Any) -> None:
    for model in (BatchRequest, EventsRequest, EventIn):
        try:
            model.model_validate(payload)
        except ValidationError as exc:
            assert exc.errors()  # per-field errors the 422 answer lists


@st.composite
def customer_frames(draw: st.DrawFn) -> pl.DataFrame:
    names = draw(st.lists(st.sampled_from(PACKED_FIELDS), unique=True))
    if draw(st.booleans()):
        names = ["customer_id", *names]
    cols = [column(n, dtype=draw(st.sampled_from(INPUT_DTYPES[:10]))) for n in names]
    if not cols:
        cols = [column("other", dtype=pl.Int64)]
    return draw(dataframes(cols, max_size=10, allow_null=True))


@FUZZ
@given(frame=customer_frames())
def test_pack_customers_answers_any_table(frame: pl.DataFrame) -> None:
    try:
        packed, _ = pack_customers(frame)
    except ValueError as exc:
        assert str(exc)
        return
    assert packed.height == frame.height
    assert packed["packed"].str.count_matches(r"\|").eq(len(PACKED_FIELDS) - 1).all()


def test_validate_quarantines_rows_of_a_file_with_a_nested_column() -> None:
    """Regression (found by the property above): an extra list column, common in Parquet
    exports, made building the quarantine table raise a raw polars error."""
    frame = pl.DataFrame(
        {
            "customer_id": ["c1", None],
            "ts": ["2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z"],
            "tags": [["a", "b"], []],
        }
    )
    res = validate(frame, now=NOW)
    assert res.accepted.height == 1
    assert res.quarantined["reason"].to_list() == ["missing_customer_id"]
    assert res.quarantined["tags"].to_list() == ['{"tags":[]}']


def test_pack_customers_names_a_wrongly_typed_column() -> None:
    """Regression: a text value in a numeric feature column raised a raw polars error."""
    with pytest.raises(ValueError, match=r"wrong type.*progress_to_next"):
        pack_customers(pl.DataFrame({"customer_id": ["c1"], "progress_to_next": ["lots"]}))

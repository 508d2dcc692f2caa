"""Event validation: every reason, the CLI contract, and read = accepted + quarantined."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from features.adapters.ml100k import read_ml100k
from features.io import InputError, read_catalog, scan_table
from features.schemas import EVENTS
from features.validation import REASONS, validate
from patron.cli import app

NOW = datetime(2025, 1, 1, tzinfo=UTC)
runner = CliRunner()


def _row(**over: str | None) -> dict[str, str | None]:
    row: dict[str, str | None] = {
        "customer_id": "c1",
        "item_id": "i1",
        "ts": "2024-06-01T10:00:00Z",
        "quantity": "1",
        "unit_price": "9.99",
    }
    row.update(over)
    return row


def _frame(rows: list[dict[str, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=dict.fromkeys(rows[0], pl.String))


CATALOG = pl.DataFrame({"item_id": ["i1", "i2", "i3"]})


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (_row(customer_id=None), "missing_customer_id"),
        (_row(customer_id="   "), "missing_customer_id"),
        (_row(item_id=""), "missing_item_id"),
        (_row(ts="yesterday"), "unparseable_timestamp"),
        (_row(ts="2024-02-30"), "unparseable_timestamp"),
        (_row(ts=None), "unparseable_timestamp"),
        (_row(ts="2024-01-02 03:04:05 tomorrow"), "unparseable_timestamp"),
        (_row(ts="-5"), "unparseable_timestamp"),
        (_row(ts="2031-01-01"), "future_timestamp"),
        (_row(ts="1924905600"), "future_timestamp"),  # 2031 as Unix seconds
        (_row(quantity="two"), "unparseable_number"),
        (_row(unit_price="NaN"), "unparseable_number"),
        (_row(quantity="0"), "non_positive_quantity"),
        (_row(unit_price="-0.01"), "negative_price"),
        (_row(item_id="i404"), "unknown_item"),
    ],
)
def test_each_reason(bad: dict[str, str | None], reason: str) -> None:
    good = _row(customer_id="c2")
    result = validate(_frame([good, bad]), CATALOG, NOW)
    assert result.summary["reasons"] == {reason: 1}
    assert result.summary["read"] == 2 and result.summary["accepted"] == 1
    q = result.quarantined.row(0, named=True)
    assert q["reason"] == reason and q["row_number"] == 2
    assert q["customer_id"] == bad["customer_id"]  # the original value, as a string
    assert result.accepted["customer_id"].to_list() == ["c2"]


def test_duplicate_rows_after_the_first_are_quarantined() -> None:
    rows = [_row(), _row(), _row(quantity="2"), _row()]
    result = validate(_frame(rows), None, NOW)
    assert result.summary["reasons"] == {"duplicate_row": 2}
    assert result.quarantined["row_number"].to_list() == [2, 4]
    # equal after normalisation counts too (same instant, written two ways)
    same = [_row(ts="2024-06-01T10:00:00Z"), _row(ts="2024-06-01 12:00:00+02:00")]
    assert validate(_frame(same), None, NOW).summary["reasons"] == {"duplicate_row": 1}


def test_first_failing_reason_wins() -> None:
    rows = [_row(customer_id="", ts="bad", quantity="0"), _row(ts="bad", quantity="0")]
    reasons = validate(_frame(rows), None, NOW).quarantined["reason"].to_list()
    assert reasons == ["missing_customer_id", "unparseable_timestamp"]
    assert REASONS.index("missing_customer_id") < REASONS.index("unparseable_timestamp")


def test_returns_are_kept_and_event_type_decides() -> None:
    rows = [
        {**_row(quantity="-2"), "event_type": ""},  # negative = return
        {**_row(customer_id="c2", quantity="3"), "event_type": "Refund"},  # marked return
        {**_row(customer_id="c3", quantity="-1"), "event_type": "purchase"},  # contradiction
        {**_row(customer_id="c4"), "event_type": "gift"},
    ]
    result = validate(_frame(rows), None, NOW)
    assert result.accepted["quantity"].to_list() == [-2.0, -3.0]
    assert result.summary["returns"] == 2
    assert result.quarantined["reason"].to_list() == ["non_positive_quantity", "unknown_event_type"]


def test_timestamp_layouts() -> None:
    texts = {
        "2024-01-02": datetime(2024, 1, 2, tzinfo=UTC),
        "2024-01-02T03:04": datetime(2024, 1, 2, 3, 4, tzinfo=UTC),
        "2024-01-02 03:04:05 UTC": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        " 2024-01-02t03:04:05Z ": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        "2024-01-02T03:04:05-0530": datetime(2024, 1, 2, 8, 34, 5, tzinfo=UTC),
        "2024-01-02T03:04+01:00": datetime(2024, 1, 2, 2, 4, tzinfo=UTC),
        "2024-01-02T03:04:05.123456789Z": datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        "881250949.5": datetime(1997, 12, 4, 15, 55, 49, 500000, tzinfo=UTC),
    }
    df = pl.DataFrame({"customer_id": [str(i) for i in range(len(texts))], "ts": list(texts)})
    result = validate(df, None, NOW)
    assert result.summary["accepted"] == len(texts), result.quarantined
    assert result.accepted["ts"].to_list() == list(texts.values())


def test_defaults_timestamps_and_extra_columns() -> None:
    df = pl.DataFrame(
        {
            "customer_id": [" 7 ", "8", "9", "10"],
            "item_id": ["a", "b", "c", "d"],
            "ts": ["881250949", "2024-01-02", "2024-01-02T03:04:05.250+01:00", "2024-01-02 03:04"],
            "loyalty_card": ["x", "y", "z", "w"],
        }
    )
    result = validate(df, None, NOW)
    acc = result.accepted
    assert dict(acc.schema) == EVENTS
    assert acc["customer_id"].to_list() == ["7", "8", "9", "10"]
    assert acc["quantity"].to_list() == [1.0] * 4
    assert acc["unit_price"].is_null().all()
    assert acc["ts"].to_list() == [
        datetime(1997, 12, 4, 15, 55, 49, tzinfo=UTC),
        datetime(2024, 1, 2, tzinfo=UTC),
        datetime(2024, 1, 2, 2, 4, 5, 250000, tzinfo=UTC),
        datetime(2024, 1, 2, 3, 4, tzinfo=UTC),
    ]


def test_transaction_only_data_needs_no_item_id() -> None:
    rows = [_row(item_id=None), _row(customer_id="c2", item_id=None)]
    result = validate(_frame(rows), CATALOG, NOW)
    assert result.summary["accepted"] == 2 and result.summary["transaction_only"]
    no_col = _frame([{k: v for k, v in _row().items() if k != "item_id"}])
    assert validate(no_col, None, NOW).summary["accepted"] == 1


def test_typed_parquet_input(tmp_path: Path) -> None:
    df = pl.DataFrame(
        {
            "customer_id": [1, 2, None],
            "item_id": ["a", "b", "c"],
            "ts": [datetime(2024, 1, 1), datetime(2024, 1, 2), datetime(2024, 1, 3)],
            "quantity": [1, -1, 2],
        }
    )
    path = tmp_path / "ev.parquet"
    df.write_parquet(path)
    result = validate(scan_table(path, ("customer_id", "ts")), None, NOW)
    assert result.summary["reasons"] == {"missing_customer_id": 1}
    assert result.accepted["customer_id"].to_list() == ["1", "2"]
    assert result.accepted["quantity"].to_list() == [1.0, -1.0]


def test_unreadable_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        scan_table(tmp_path / "nope.csv")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(InputError, match="unsupported file type"):
        scan_table(tmp_path / "x.json")
    (tmp_path / "fake.parquet").write_text("customer_id,ts\n")
    with pytest.raises(InputError, match="not a Parquet file"):
        scan_table(tmp_path / "fake.parquet")
    (tmp_path / "cols.csv").write_text("user,when\n1,2\n")
    with pytest.raises(InputError, match=r"missing required column.*customer_id, ts"):
        scan_table(tmp_path / "cols.csv", ("customer_id", "ts"))


# ---- the CLI ---------------------------------------------------------------------------------


def _invoke(*args: str) -> tuple[int, dict[str, object] | None, str]:
    res = runner.invoke(app, list(args))
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    payload = json.loads(lines[-1]) if res.exit_code == 0 and lines else None
    return res.exit_code, payload, res.stderr if res.stderr_bytes is not None else res.output


def test_cli_validate_writes_both_files(tmp_path: Path) -> None:
    src = tmp_path / "events.csv"
    _frame([_row(), _row(), _row(customer_id="c2", quantity="0")]).write_csv(src)
    out, quar = tmp_path / "ok.parquet", tmp_path / "bad.csv"
    code, summary, _ = _invoke(
        "data", "validate", str(src), "--out", str(out), "--quarantine", str(quar),
        "--now", "2025-01-01T00:00:00",
    )  # fmt: skip
    assert code == 0 and summary is not None
    assert (summary["read"], summary["accepted"], summary["quarantined"]) == (3, 1, 2)
    assert summary["reasons"] == {"non_positive_quantity": 1, "duplicate_row": 1}
    assert pl.read_parquet(out).height == 1
    assert sorted(pl.read_csv(quar)["reason"]) == ["duplicate_row", "non_positive_quantity"]


@pytest.mark.parametrize(
    ("content", "name", "needle"),
    [
        (None, "missing.csv", "missing.csv: file not found"),
        ("customer_id,when\n1,2\n", "cols.csv", "cols.csv: missing required column(s) ts"),
        ("{}", "x.json", "x.json: unsupported file type"),
        ("", "empty.csv", "empty.csv: cannot be read as CSV"),
        ("\x00\xff\xfe\x01,\x02\n\x03", "bin.csv", "bin.csv: not a text CSV file"),
    ],
)
def test_cli_validate_rejects_unreadable_file(
    tmp_path: Path, content: str | None, name: str, needle: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    res = runner.invoke(app, ["data", "validate", str(path), "--out", str(tmp_path / "o.pq")])
    assert res.exit_code == 2
    assert needle in " ".join(res.output.split())
    assert not (tmp_path / "o.pq").exists()


# ---- done-when: a corrupted copy of ML-100K ---------------------------------------------------


def test_corrupted_ml100k_every_row_reported(data_dir: Path, tmp_path: Path) -> None:
    events, catalog = read_ml100k(data_dir / "ml-100k")
    cat_path = tmp_path / "catalog.parquet"
    catalog.write_parquet(cat_path)
    raw = events.select(
        "customer_id",
        "item_id",
        pl.col("ts").dt.epoch("s").cast(pl.String).alias("ts"),
        pl.col("quantity").cast(pl.Int64).cast(pl.String),
        pl.col("unit_price").cast(pl.String),
    ).with_row_index("i")
    n = 50  # rows per fault, on disjoint row ranges
    faults = {
        "missing_customer_id": {"customer_id": pl.lit("")},
        "missing_item_id": {"item_id": pl.lit(None, pl.String)},
        "unparseable_timestamp": {"ts": pl.lit("1997-13-01")},
        "future_timestamp": {"ts": pl.lit("2099-01-01T00:00:00Z")},
        "unparseable_number": {"quantity": pl.lit("1,5")},
        "non_positive_quantity": {"quantity": pl.lit("0")},
        "negative_price": {"unit_price": pl.lit("-3.50")},
        "unknown_item": {"item_id": pl.lit("no-such-movie")},
    }
    for k, (_, change) in enumerate(faults.items()):
        hit = pl.col("i").is_between(1000 * k, 1000 * k + n - 1)
        raw = raw.with_columns(
            [pl.when(hit).then(v).otherwise(pl.col(c)).alias(c) for c, v in change.items()]
        )
    dupes = raw.filter(pl.col("i").is_between(20_000, 20_000 + n - 1))
    corrupted = pl.concat([raw, dupes]).drop("i")
    src = tmp_path / "ml100k_corrupted.csv"
    corrupted.write_csv(src)

    acc, quar = tmp_path / "accepted.parquet", tmp_path / "quarantine.parquet"
    now = "2025-01-01T00:00:00"
    code, summary, err = _invoke(
        "data", "validate", str(src), "--catalog", str(cat_path),
        "--out", str(acc), "--quarantine", str(quar), "--now", now,
    )  # fmt: skip
    assert code == 0, err
    assert summary is not None
    assert summary["read"] == 100_000 + n
    assert summary["read"] == summary["accepted"] + summary["quarantined"]  # type: ignore[operator]
    assert summary["reasons"] == {**dict.fromkeys(faults, n), "duplicate_row": n}
    q = pl.read_parquet(quar)
    assert q.height == summary["quarantined"] and q["row_number"].is_unique().all()
    assert pl.read_parquet(acc).height == 100_000 - 8 * n

    code, again, err = _invoke(
        "data", "validate", str(acc), "--catalog", str(cat_path),
        "--out", str(tmp_path / "again.parquet"), "--quarantine", str(tmp_path / "q2.parquet"),
        "--now", now,
    )  # fmt: skip
    assert code == 0, err
    assert again is not None
    assert (again["quarantined"], again["accepted"]) == (0, summary["accepted"])


def test_read_catalog_fills_defaults(tmp_path: Path) -> None:
    path = tmp_path / "cat.csv"
    path.write_text("item_id,price,in_stock,launched_at\na,1.5,no,2020-01-01\nb,x,,\n,1,1,\n")
    cat = read_catalog(path)
    assert cat["item_id"].to_list() == ["a", "b"]
    assert cat["price"].to_list() == [1.5, None]
    assert cat["in_stock"].to_list() == [False, True]
    assert cat["premium"].to_list() == [False, False]


# ---- property: read = accepted + quarantined on arbitrary messy input ---------------------------

TOKENS = [
    *["", " ", "0", "-1", "1", "2.5", "1e400", "nan", "-0", "abc", "é", "i1", "c1"],
    *["2024-01-01", "881250949", "2024-02-30T25:00:00", "2999-12-31T23:59:59Z"],
    *["return", "purchase"],
]
MESSY = st.one_of(st.none(), st.sampled_from(TOKENS), st.text(max_size=6))
COLUMNS = ["customer_id", "item_id", "ts", "quantity", "unit_price", "event_type", "order_id", "x"]


@st.composite
def messy_frames(draw: st.DrawFn) -> pl.DataFrame:
    optional = draw(st.sets(st.sampled_from(COLUMNS[1:])))
    cols = ["customer_id", "ts", *sorted(c for c in optional if c != "ts")]
    n = draw(st.integers(0, 25))
    data = {c: draw(st.lists(MESSY, min_size=n, max_size=n)) for c in cols}
    # repeat some rows so duplicates occur
    df = pl.DataFrame(data, schema=dict.fromkeys(cols, pl.String))
    return pl.concat([df, df.head(draw(st.integers(0, n)))])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(df=messy_frames(), use_catalog=st.booleans(), via_csv=st.booleans())
def test_property_every_row_accounted_for(
    df: pl.DataFrame, use_catalog: bool, via_csv: bool
) -> None:
    catalog = pl.DataFrame({"item_id": ["i1", "1", "abc"]}) if use_catalog else None
    if via_csv:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "e.csv"
            df.write_csv(path)
            result = validate(scan_table(path, ("customer_id", "ts")), catalog, NOW)
    else:
        result = validate(df, catalog, NOW)
    s = result.summary
    assert s["read"] == df.height == s["accepted"] + s["quarantined"]
    assert sum(s["reasons"].values()) == s["quarantined"] == result.quarantined.height
    assert dict(result.accepted.schema) == EVENTS
    rows = set(result.quarantined["row_number"].to_list())
    assert len(rows) == result.quarantined.height
    again = validate(result.accepted, catalog, NOW)
    assert again.summary["quarantined"] == 0
    assert again.accepted.equals(result.accepted)

"""The analytics notebooks execute headless (notebooks/run.py) and produce their plots/tables.

One subprocess runs every notebook into a temporary reports folder; the tests then check the
PNG plots and CSV tables exist, are real, and hold numbers that make sense (not just files).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import polars as pl
import pytest

from tests.conftest import PROJECT_ROOT

RUN = PROJECT_ROOT / "notebooks" / "run.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

EXPECTED = {
    "loyalty_cdnow": {
        "png": [
            "tracking_cumulative",
            "conditional_expectations",
            "rfm_cells",
            "tier_distribution",
            "loyalty_index",
            "clv_by_segment",
        ],
        "csv": [
            "bgnbd_params",
            "tracking_weekly",
            "conditional_expectations",
            "rfm_cells",
            "tiers",
            "loyalty_index_by_tier",
            "clv_by_segment",
        ],
    },
    "clv_models_cdnow": {
        "png": ["tracking_by_model", "spend_by_index_decile"],
        "csv": [
            "purchase_models",
            "tracking_by_model",
            "covariate_first_order_value",
            "index_validity",
            "spend_by_index_decile",
        ],
    },
    "model_eval_ml100k": {
        "png": ["metrics_vs_published", "ndcg_by_tier", "coverage_popularity_bias"],
        "csv": ["metrics", "ndcg_by_tier", "popularity_bias", "example_recommendations"],
    },
}


def test_paired_ipynb_files_are_in_sync() -> None:
    """notebooks/*.ipynb are regenerated from the .py scripts (`run.py --sync`)."""
    proc = subprocess.run(
        [sys.executable, str(RUN), "--check-sync"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_a_failing_cell_fails_the_run(tmp_path: Path) -> None:
    """Exit status 1, the error named on stderr, the partial notebook kept for debugging."""
    (tmp_path / "broken.py").write_text(
        "# %%\nprint('first cell runs')\n\n# %%\nraise RuntimeError('boom in cell 2')\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--dir",
            str(tmp_path),
            "--only",
            "broken",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "RuntimeError: boom in cell 2" in proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["failed"] == ["broken"]
    partial = nbformat.read(tmp_path / "out" / "broken" / "broken.ipynb", as_version=4)
    outputs = [o for c in partial.cells for o in c.get("outputs", [])]
    assert any(o.get("text") == "first cell runs\n" for o in outputs)
    assert any(o.get("output_type") == "error" for o in outputs)


def test_unknown_notebook_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(RUN), "--only", "nope", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "no notebook ['nope']" in proc.stderr


@pytest.fixture(scope="module")
def reports(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reports")
    env = {**os.environ, "PATRON_DATA_DIR": str(data_dir), "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(RUN), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=PROJECT_ROOT,
    )
    assert proc.returncode == 0, f"notebooks failed:\n{proc.stderr[-4000:]}"
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["failed"] == []
    return out


def _csv(reports: Path, nb: str, name: str) -> pl.DataFrame:
    return pl.read_csv(reports / nb / f"{name}.csv")


@pytest.mark.slow
@pytest.mark.parametrize("nb", sorted(EXPECTED))
def test_outputs_exist_and_are_real(reports: Path, nb: str) -> None:
    for name in EXPECTED[nb]["png"]:
        png = reports / nb / f"{name}.png"
        assert png.is_file(), png
        blob = png.read_bytes()
        assert blob[:8] == PNG_MAGIC and len(blob) > 10_000, f"{png} is not a real plot"
    for name in EXPECTED[nb]["csv"]:
        assert _csv(reports, nb, name).height > 0, name
    executed = nbformat.read(reports / nb / f"{nb}.ipynb", as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code), "a code cell did not run"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


@pytest.mark.slow
def test_loyalty_tables_hold_sensible_numbers(reports: Path) -> None:
    nb = "loyalty_cdnow"
    params = _csv(reports, nb, "bgnbd_params")
    pub, fit = params.row(0, named=True), params.row(1, named=True)
    for k in ("r", "alpha", "a", "b"):  # the notebook's fit reproduces FHL 2005
        assert fit[k] == pytest.approx(pub[k], rel=0.01), k
    track = _csv(reports, nb, "tracking_weekly")
    assert track["week"].to_list() == list(range(1, 79))
    assert track["cum_actual"].is_sorted() and track["cum_model"].is_sorted()
    # the model tracks the holdout within 10% in total (FHL report a close fit)
    last = track.row(-1, named=True)
    assert last["cum_model"] == pytest.approx(last["cum_actual"], rel=0.10)
    cond = _csv(reports, nb, "conditional_expectations")
    assert cond["x"].cast(pl.String).to_list() == [*map(str, range(7)), "7+"]
    assert cond["customers"].sum() == 2357
    assert cond["actual"].is_sorted() and cond["predicted"].is_sorted()  # more x, more y
    customers = _csv(reports, nb, "tiers")["customers"].sum()
    assert _csv(reports, nb, "rfm_cells")["customers"].sum() == customers
    assert _csv(reports, nb, "clv_by_segment")["customers"].sum() == customers
    assert _csv(reports, nb, "clv_by_segment")["clv_share"].sum() == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow
def test_model_table_has_every_model_and_the_published_rows(reports: Path) -> None:
    nb = "model_eval_ml100k"
    metrics = _csv(reports, nb, "metrics")
    ours = metrics.filter(pl.col("source") == "patron")
    assert sorted(ours["model"]) == ["als", "copurchase", "popular", "served"]
    bivae = metrics.filter(pl.col("model") == "BiVAE").row(0, named=True)
    assert bivae["ndcg@10"] == pytest.approx(0.475077)
    ndcg = dict(zip(ours["model"], ours["ndcg@10"], strict=True))
    assert ndcg["served"] > ndcg["popular"] and ndcg["als"] > ndcg["popular"]
    assert all(0.0 < v < 1.0 for v in ndcg.values())
    per_tier = _csv(reports, nb, "ndcg_by_tier")
    assert sorted(per_tier["model"]) == ["als", "copurchase", "popular", "served"]
    assert len(per_tier.columns) >= 3  # at least two tiers present
    bias = _csv(reports, nb, "popularity_bias")
    deciles = bias.select([f"d{d}" for d in range(1, 11)]).sum_horizontal()
    assert all(v == pytest.approx(1.0, abs=1e-4) for v in deciles)
    examples = _csv(reports, nb, "example_recommendations")
    assert examples["reasons"].str.len_chars().min() > 0  # every pick says why


@pytest.mark.slow
def test_clv_models_tables_hold_sensible_numbers(reports: Path) -> None:
    nb = "clv_models_cdnow"
    track = _csv(reports, nb, "tracking_by_model")
    assert track.height == 39 and (track["actual"].diff().drop_nulls() >= 0).all()
    last = track.row(-1, named=True)
    for model in ("bgnbd", "pareto_nbd"):  # both within 20% of the actual total
        assert abs(last[model] - last["actual"]) < 0.2 * last["actual"]
    validity = _csv(reports, nb, "index_validity")
    assert (validity["spearman_spend"] > 0.3).all()
    deciles = _csv(reports, nb, "spend_by_index_decile")
    assert deciles["holdout_spend"][-1] > 3 * deciles["holdout_spend"][0]

"""``patron data`` commands: validate, import (ml-100k, cdnow), synth.

Heavy imports happen inside the commands so ``patron --help`` stays fast.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import typer

from patron.cliutil import UserError, command, emit
from patron.settings import get_settings

data_app = typer.Typer(no_args_is_help=True)
import_app = typer.Typer(no_args_is_help=True)
data_app.add_typer(
    import_app, name="import", help="Convert a public data set into the input contracts."
)

log = logging.getLogger("patron.data")


def _default_out(name: str) -> Path:
    return get_settings().work_dir / "data" / name


@data_app.command("validate")
@command
def validate_cmd(
    events: Path = typer.Argument(..., help="Events file: CSV (.csv/.tsv) or Parquet."),
    catalog: Path | None = typer.Option(
        None, "--catalog", help="Catalog file; rows whose item is not in it are quarantined."
    ),
    quarantine: Path | None = typer.Option(
        None,
        "--quarantine",
        help="Where rejected rows go, with a `reason` column (.parquet or .csv). "
        "Default: PATRON_WORK_DIR/data/<name>.quarantine.parquet",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Where accepted rows go (Parquet, EVENTS schema). "
        "Default: PATRON_WORK_DIR/data/<name>.accepted.parquet",
    ),
    now: datetime | None = typer.Option(
        None, "--now", help="Reference time for the future-timestamp check (default: now, UTC)."
    ),
) -> None:
    """Validate purchase events: accepted rows to Parquet, rejected rows to quarantine."""
    from features.io import read_catalog, scan_table, write_table
    from features.schemas import EVENTS_REQUIRED
    from features.validation import validate

    lf = scan_table(events, EVENTS_REQUIRED)
    cat = read_catalog(catalog) if catalog is not None else None
    try:
        result = validate(lf, cat, now)
    except ValueError as exc:
        raise UserError(f"{events}: {exc}") from None
    stem = events.name.split(".")[0] or "events"
    out = out or _default_out(f"{stem}.accepted.parquet")
    quarantine = quarantine or _default_out(f"{stem}.quarantine.parquet")
    if out.resolve() == events.resolve() or quarantine.resolve() == events.resolve():
        raise UserError(f"{events}: refusing to overwrite the input; choose another --out")
    write_table(result.accepted, out)
    write_table(result.quarantined, quarantine)
    log.info("validated %s: %s", events.name, result.summary)
    emit({**result.summary, "file": str(events), "out": str(out), "quarantine": str(quarantine)})


@import_app.command("ml-100k")
@command
def import_ml100k(
    directory: Path | None = typer.Argument(
        None, help="Folder with ml-100k.inter and ml-100k.item (default PATRON_DATA_DIR/ml-100k)."
    ),
    out: Path = typer.Option(
        None, "--out", help="Events Parquet (default PATRON_WORK_DIR/data/ml100k_events.parquet)."
    ),
    catalog_out: Path | None = typer.Option(
        None, "--catalog-out", help="Also write the (partly synthetic) catalog here."
    ),
    seed: int = typer.Option(42, help="Seed of the synthetic catalog fields (price, stock...)."),
) -> None:
    """MovieLens 100K: every rating becomes a purchase; catalog fields are synthetic."""
    from features.adapters.ml100k import read_ml100k
    from features.io import write_table

    directory = directory or get_settings().data_dir / "ml-100k"
    events, catalog = read_ml100k(directory, seed)
    out = out or _default_out("ml100k_events.parquet")
    write_table(events, out)
    result: dict[str, object] = {
        "events": events.height,
        "customers": events["customer_id"].n_unique(),
        "items": catalog.height,
        "out": str(out),
    }
    if catalog_out is not None:
        write_table(catalog, catalog_out)
        result["catalog_out"] = str(catalog_out)
    emit(result)


@import_app.command("cdnow")
@command
def import_cdnow(
    file: Path | None = typer.Argument(
        None,
        help="CDNOW_master.txt or CDNOW_sample.txt "
        "(default PATRON_DATA_DIR/cdnow/CDNOW_sample.txt).",
    ),
    out: Path = typer.Option(
        None, "--out", help="Events Parquet (default PATRON_WORK_DIR/data/cdnow_events.parquet)."
    ),
) -> None:
    """CDNOW purchase history (master or sample layout): transactions without item ids."""
    file = file or get_settings().data_dir / "cdnow" / "CDNOW_sample.txt"
    if not file.is_file():
        raise UserError(f"{file}: file not found")
    try:
        from features.adapters.cdnow import read_cdnow
    except ImportError as exc:  # the adapter lives in its own module
        raise UserError(f"the CDNOW adapter is not installed: {exc}") from None
    from features.io import write_table

    events = read_cdnow(file)
    out = out or _default_out("cdnow_events.parquet")
    write_table(events, out)
    emit(
        {
            "events": events.height,
            "customers": events["customer_id"].n_unique(),
            "out": str(out),
        }
    )


@data_app.command("synth")
@command
def synth_cmd(
    customers: int = typer.Option(10_000, "--customers", min=1, help="Number of customers."),
    items: int = typer.Option(2_000, "--items", min=1, help="Number of catalog items."),
    events: int = typer.Option(200_000, "--events", min=0, help="Number of purchase events."),
    seed: int = typer.Option(42, "--seed", help="Same seed and sizes give the same files."),
    out: Path | None = typer.Option(
        None, "--out", help="Output folder (default PATRON_WORK_DIR/data/synth)."
    ),
) -> None:
    """Synthetic events, catalog and customers with realistic structure (see docs/data.md)."""
    from rich.console import Console
    from rich.progress import Progress

    from features.synth import SynthConfig, generate

    cfg = SynthConfig(customers=customers, items=items, events=events, seed=seed)
    out = out or _default_out("synth")
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("generating events", total=events)
        result = generate(cfg, out, progress=lambda n: bar.advance(task, n))
    emit(
        {
            **result,
            "events_path": str(out / "events.parquet"),
            "catalog_path": str(out / "catalog.parquet"),
            "customers_path": str(out / "customers.parquet"),
        }
    )

"""Streams the export to a temp file beside its destination; renamed into place when complete,
so a failed run never leaves a partial file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import polars as pl

Format = Literal["parquet", "csv", "jsonl"]


class Writer:
    """Streams batches to a temp file beside ``out``; ``commit`` renames it into place."""

    def __init__(self, out: Path, fmt: Format) -> None:
        self.out, self.fmt = out, fmt
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self._fh: Any = None
        self._pq: Any = None
        self._first = True

    def write(self, frame: pl.DataFrame) -> None:
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            table = frame.to_arrow()
            if self._pq is None:
                # dictionaries for the few-valued columns only: ids and reasons ("bought
                # together with <item>") have too many values; 84 instead of 104 MB and ~40%
                # less CPU for the 1M-customer export (benchmarks/picks.py)
                self._pq = pq.ParquetWriter(
                    str(self.tmp),
                    table.schema,
                    compression="zstd",
                    use_dictionary=["tier", "segment"],
                )
            self._pq.write_table(table)
            return
        if self._fh is None:
            self._fh = self.tmp.open("wb")
        if self.fmt == "csv":
            flat = frame.with_columns(pl.col("reasons").list.join("; "))
            flat.write_csv(self._fh, include_header=self._first)
        else:
            frame.write_ndjson(self._fh)
        self._first = False

    def commit(self, empty_schema: pl.DataFrame) -> None:
        if self._pq is None and self._fh is None:
            self.write(empty_schema)
        if self._pq is not None:
            self._pq.close()
        if self._fh is not None:
            self._fh.close()
        os.replace(self.tmp, self.out)

    def abort(self) -> None:
        for h in (self._pq, self._fh):
            if h is not None:
                h.close()
        self.tmp.unlink(missing_ok=True)


def empty_output() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "customer_id": pl.String,
            "recommendation_id": pl.String,
            "rank": pl.Int32,
            "item_id": pl.String,
            "score": pl.Float32,
            "reasons": pl.List(pl.String),
            "tier": pl.String,
            "segment": pl.String,
        }
    )

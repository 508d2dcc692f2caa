"""Personalised email picks for many customers: the API's scoring and rules code, in batches.

Per batch of customers: the scoring library over the whole batch (``patron.scoring``, the
request ``serving.recommend.customer_request`` builds), then the rules over the whole batch
(``serving.rules.apply.rules_batch``) — the API's functions, so a customer gets the same picks
by email as from ``GET /v1/customers/{id}/recommendations`` in the same state. Only customers
with marketing consent are ever written; the output is renamed into place when complete.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from features.online import CustomerOnline
from patron.scoring import exclusions, score_batch
from serving.attribution.ids import experiment_of, new_id
from serving.attribution.store import AnswerRecord
from serving.export.frame import contexts_from_frame, contexts_from_online, picks_frame
from serving.export.writer import Format, Writer, empty_output
from serving.index import faiss_threads
from serving.model import LoadedModel
from serving.recommend import customer_request
from serving.rules.apply import rules_batch
from serving.rules.engine import BatchPicks
from serving.rules.loader import LoadedRules, fallback_only

RECENT_K = 20  # recent purchases read per customer, as the API does


@dataclass
class ExportReport:
    customers_selected: int = 0
    written: int = 0
    rows: int = 0
    skipped_no_consent: int = 0
    skipped_no_eligible_picks: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "customers_selected": self.customers_selected,
            "written": self.written,
            "rows": self.rows,
            "skipped_no_consent": self.skipped_no_consent,
            "skipped_no_eligible_picks": self.skipped_no_eligible_picks,
            "seconds": round(self.seconds, 3),
            **self.extra,
        }


def select_customers(
    customers: pl.DataFrame, tier: str | None, segment: str | None
) -> tuple[pl.DataFrame, int, int]:
    """Filter by tier/segment, then keep consenting customers only.

    Returns (consenting rows, selected count, skipped for no consent). A missing or null
    consent counts as no consent.
    """
    sel = customers
    if tier is not None:
        sel = sel.filter(pl.col("tier") == tier)
    if segment is not None:
        sel = sel.filter(pl.col("segment") == segment)
    if "marketing_consent" in sel.columns:
        ok = sel.filter(pl.col("marketing_consent").fill_null(False))
    else:
        ok = sel.clear()
    return ok, sel.height, sel.height - ok.height


def _batches(frame: pl.DataFrame, size: int) -> Iterator[pl.DataFrame]:
    for start in range(0, frame.height, size):
        yield frame.slice(start, size)


@dataclass
class _Done:
    """One batch's picks, ready to write in order."""

    frame: pl.DataFrame | None  # None: nobody left to write
    customers: int  # rows of the batch (for progress)
    written: int
    no_picks: int
    no_consent: int  # withdrawn on the online row
    stages: dict[str, float]


RecordAnswers = Callable[[list[AnswerRecord]], None]


def _records(
    model: LoadedModel,
    ids: list[str],
    rec_ids: list[str],
    res: BatchPicks,
    item_ids: np.ndarray,
    now: float,
) -> list[AnswerRecord]:
    """What each customer's email answer served, as the API records its answers (the
    champion's picks: variant champion, no challenger)."""
    experiment = experiment_of(model.version, None)
    counts = res.count.tolist()
    return [
        AnswerRecord(
            rid,
            now,
            experiment,
            "champion",
            model.version,
            res.rules_version,
            cid,
            item_ids[res.item_idx[i, : counts[i]]].tolist(),
        )
        for i, (cid, rid) in enumerate(zip(ids, rec_ids, strict=True))
        if counts[i]
    ]


def picks_of(
    part: pl.DataFrame,
    model: LoadedModel,
    rules: LoadedRules,
    k: int,
    read_online: Callable[[list[str]], list[CustomerOnline]] | None,
    now: float | None,
    item_ids: np.ndarray,
    record_answers: RecordAnswers | None = None,
) -> _Done:
    """One batch from customer rows to the picks table: the API's scoring and rules; with
    ``record_answers``, the answers' attribution records go there (serving/attribution/)."""
    ids = part["customer_id"].cast(pl.String).to_list()
    withdrawn = 0
    if read_online is not None:
        online = read_online(ids)
        ctxs = contexts_from_online(online, model, now)
        consent = np.array([r.marketing_consent for r in online], bool)
        if not consent.all():  # the online row is newer: respect a withdrawn consent
            keep = np.flatnonzero(consent)
            withdrawn = len(ids) - len(keep)
            ids = [ids[i] for i in keep]
            ctxs = [ctxs[i] for i in keep]
    else:
        ctxs = contexts_from_frame(part, model)
    if not ids:
        return _Done(None, part.height, 0, 0, withdrawn, {})
    t1 = time.perf_counter()
    req = customer_request(model, ids, ctxs)
    cands = score_batch(model.scoring, req)
    t2 = time.perf_counter()
    res = rules_batch(model, rules, cands, exclusions(model.scoring, req), ctxs, k)
    t3 = time.perf_counter()
    minted = time.time()
    rec_ids = [new_id(minted) for _ in ids]
    frame = picks_frame(res, ids, ctxs, item_ids, rec_ids)
    if record_answers is not None:
        record_answers(_records(model, ids, rec_ids, res, item_ids, minted))
    got = int((res.count > 0).sum())
    stages = {"candidates_s": t2 - t1, "ranking_s": t3 - t2, "output_s": time.perf_counter() - t3}
    return _Done(frame, part.height, got, len(ids) - got, withdrawn, stages)


def export_picks(
    model: LoadedModel,
    customers: pl.DataFrame,
    out: Path,
    *,
    rules: LoadedRules | None,
    k: int = 8,
    fmt: Format = "parquet",
    tier: str | None = None,
    segment: str | None = None,
    read_online: Callable[[list[str]], list[CustomerOnline]] | None = None,
    batch_size: int = 2_048,
    progress: Callable[[int], None] | None = None,
    now: float | None = None,
    threads: int | None = None,
    record_answers: RecordAnswers | None = None,
) -> ExportReport:
    """Write k picks per consenting customer; ``rules=None``: the fallback-only rules.

    With ``read_online`` (the online store's batch read), contexts come from the online
    features exactly as the API builds them; otherwise from the ``customers`` table.
    Batches are scored on ``threads`` threads (default: the cores; the compiled passes
    release the GIL), each batch whole on one thread, and written in order; stage seconds
    in the report are summed over the threads.
    """
    t0 = time.perf_counter()
    report = ExportReport()
    chosen, report.customers_selected, report.skipped_no_consent = select_customers(
        customers, tier, segment
    )
    writer = Writer(Path(out), fmt)
    used = rules if rules is not None else fallback_only()
    # seconds summed over the threads; write_s: the ordered writes (this thread)
    stages = {"candidates_s": 0.0, "ranking_s": 0.0, "output_s": 0.0, "write_s": 0.0}
    item_ids = np.asarray(model.items.item_ids).astype(str)
    workers = max(1, threads or os.cpu_count() or 1)

    def one(part: pl.DataFrame) -> _Done:
        with faiss_threads(1):  # parallel across batches, not inside a search
            return picks_of(part, model, used, k, read_online, now, item_ids, record_answers)

    try:
        with ThreadPoolExecutor(workers) as pool:
            pending: deque[Future[_Done]] = deque()
            for part in _batches(chosen, batch_size):
                pending.append(pool.submit(one, part))
                if len(pending) < 2 * workers:  # bounded: at most 2 batches per thread
                    continue
                _write(pending.popleft().result(), writer, report, stages, progress)
            while pending:
                _write(pending.popleft().result(), writer, report, stages, progress)
        writer.commit(empty_output())
    except BaseException:
        writer.abort()
        raise
    report.seconds = time.perf_counter() - t0
    report.extra = {
        **{key: round(v, 3) for key, v in stages.items()},
        "threads": workers,
        "k": k,
        "format": fmt,
        "out": str(out),
        "rules_version": used.version,
        "model_version": model.version,
    }
    return report


def _write(
    done: _Done,
    writer: Writer,
    report: ExportReport,
    stages: dict[str, float],
    progress: Callable[[int], None] | None,
) -> None:
    if done.frame is not None:
        t0 = time.perf_counter()
        writer.write(done.frame)
        stages["write_s"] += time.perf_counter() - t0
        report.rows += done.frame.height
    for key, v in done.stages.items():
        stages[key] += v
    report.written += done.written
    report.skipped_no_eligible_picks += done.no_picks
    report.skipped_no_consent += done.no_consent
    if progress is not None:
        progress(done.customers)

"""The model bundle: the one contract between training (writer) and serving (reader).

A bundle is a directory of plain files, no pickle:

    manifest.json              format version, model identity, params, metrics, counts, sha256s
    customer_ids.parquet       column ``customer_id`` (row i = internal user index i)
    item_ids.parquet           column ``item_id``     (row j = internal item index j)
    user_factors.npy           float32 (n_customers, factors)
    item_factors.npy           float32 (n_items, factors)
    copurchase_indptr.npy      int64   (n_items + 1,)  top-N co-purchase neighbours, CSR rows
    copurchase_indices.npy     int32   (nnz,)          neighbour item index, best first per row
    copurchase_scores.npy      float32 (nnz,)
    user_items_indptr.npy      int64   (n_customers + 1,)  items each customer bought in training
    user_items_indices.npy     int32   (nnz,)
    popularity.parquet         scope ("overall" | "tier" | "category"), key, item_idx, score, rank
    catalog.parquet            catalog snapshot, row j = item index j (features.schemas.CATALOG)
    faiss.index                optional prebuilt FAISS index over item_factors (faiss.write_index)
    als_candidates.npy         optional int32 (n_customers, depth): each customer's nearest items
                               by that index (best first, -1 padded), searched once at build time
                               so serving and the email export skip FAISS for known customers
    als_scores.npy             optional float32, the shape of als_candidates: each neighbour's
                               score for its customer (user . item factors, 0 for -1 padding),
                               so requests read the score instead of the item's factors

Serving refuses a bundle whose format version differs or whose files do not match the sha256
recorded in the manifest (``BundleError``), and keeps serving the previous one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import polars as pl
from pydantic import BaseModel, Field
from scipy import sparse

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# The one default blend (chosen by ``patron tune``, see training/config.py): what training
# writes unless configured otherwise, and what a manifest without weights means. Read-only:
# every user takes a copy.
DEFAULT_BLEND: Final = MappingProxyType({"als": 0.5, "copurchase": 1.0, "popular": 0.0})

REQUIRED_FILES = (
    "customer_ids.parquet",
    "item_ids.parquet",
    "user_factors.npy",
    "item_factors.npy",
    "copurchase_indptr.npy",
    "copurchase_indices.npy",
    "copurchase_scores.npy",
    "user_items_indptr.npy",
    "user_items_indices.npy",
    "popularity.parquet",
    "catalog.parquet",
)
OPTIONAL_FILES = ("faiss.index", "als_candidates.npy", "als_scores.npy")


class BundleError(Exception):
    """The bundle is missing, incomplete, tampered with, or of another format version."""


class Manifest(BaseModel):
    format_version: int = FORMAT_VERSION
    model_name: str = "patron-recommender"
    model_version: str | None = None
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    data_fingerprint: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    blend: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_BLEND),
        description="Weights serving uses to merge candidate sources.",
    )
    tiers: list[str] = Field(
        default_factory=list,
        description="The loyalty tier names, lowest first, as the features were built "
        "(config/tiers.yaml); empty in bundles written before tiers travelled with them.",
    )
    factors: int = 0
    counts: dict[str, int] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict, description="file name -> sha256")

    def fingerprint(self) -> str:
        """A short id of the bundle content (hash of the file hashes)."""
        joined = "".join(f"{k}:{v};" for k, v in sorted(self.files.items()))
        return hashlib.sha256(joined.encode()).hexdigest()[:16]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class BundleData:
    """Everything a bundle holds, in memory; what training writes and serving reads."""

    customer_ids: np.ndarray  # str, (n_customers,)
    item_ids: np.ndarray  # str, (n_items,)
    user_factors: np.ndarray  # float32 (n_customers, f)
    item_factors: np.ndarray  # float32 (n_items, f)
    copurchase: sparse.csr_matrix  # (n_items, n_items) top-N neighbours, scores as data
    user_items: sparse.csr_matrix  # (n_customers, n_items) training purchases (binary)
    popularity: pl.DataFrame
    catalog: pl.DataFrame
    manifest: Manifest = field(default_factory=Manifest)
    als_candidates: np.ndarray | None = None  # int32 (n_customers, depth), -1 padded
    als_scores: np.ndarray | None = None  # float32, shape of als_candidates

    def validate_shapes(self) -> None:
        n_u, n_i = len(self.customer_ids), len(self.item_ids)
        checks = [
            (self.user_factors.shape[0] == n_u, "user_factors rows != number of customers"),
            (self.item_factors.shape[0] == n_i, "item_factors rows != number of items"),
            (
                self.user_factors.shape[1] == self.item_factors.shape[1],
                "user and item factors differ in width",
            ),
            (self.copurchase.shape == (n_i, n_i), "copurchase must be n_items x n_items"),
            (self.user_items.shape == (n_u, n_i), "user_items must be n_customers x n_items"),
            (self.catalog.height == n_i, "catalog snapshot must have one row per item"),
            (self.user_factors.dtype == np.float32, "user_factors must be float32"),
            (self.item_factors.dtype == np.float32, "item_factors must be float32"),
        ]
        if self.als_candidates is not None:
            checks += [
                (
                    self.als_candidates.ndim == 2 and self.als_candidates.shape[0] == n_u,
                    "als_candidates must have one row per customer",
                ),
                (self.als_candidates.dtype == np.int32, "als_candidates must be int32"),
            ]
        if self.als_scores is not None:
            checks += [
                (self.als_candidates is not None, "als_scores needs als_candidates"),
                (
                    self.als_candidates is not None
                    and self.als_scores.shape == self.als_candidates.shape,
                    "als_scores must have the shape of als_candidates",
                ),
                (self.als_scores.dtype == np.float32, "als_scores must be float32"),
            ]
        for ok, msg in checks:
            if not ok:
                raise BundleError(msg)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    np.save(path, np.ascontiguousarray(arr), allow_pickle=False)


def write_bundle(data: BundleData, out_dir: Path, faiss_index_file: Path | None = None) -> Manifest:
    """Write a bundle atomically: build in a temp dir beside ``out_dir``, then rename."""
    data.validate_shapes()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        pl.DataFrame({"customer_id": data.customer_ids.astype(str)}).write_parquet(
            tmp / "customer_ids.parquet"
        )
        pl.DataFrame({"item_id": data.item_ids.astype(str)}).write_parquet(tmp / "item_ids.parquet")
        _save_npy(tmp / "user_factors.npy", data.user_factors.astype(np.float32, copy=False))
        _save_npy(tmp / "item_factors.npy", data.item_factors.astype(np.float32, copy=False))
        cp = data.copurchase.tocsr()
        _save_npy(tmp / "copurchase_indptr.npy", cp.indptr.astype(np.int64))
        _save_npy(tmp / "copurchase_indices.npy", cp.indices.astype(np.int32))
        _save_npy(tmp / "copurchase_scores.npy", cp.data.astype(np.float32))
        ui = data.user_items.tocsr()
        _save_npy(tmp / "user_items_indptr.npy", ui.indptr.astype(np.int64))
        _save_npy(tmp / "user_items_indices.npy", ui.indices.astype(np.int32))
        data.popularity.write_parquet(tmp / "popularity.parquet")
        data.catalog.write_parquet(tmp / "catalog.parquet")
        if faiss_index_file is not None:
            shutil.copyfile(faiss_index_file, tmp / "faiss.index")
        if data.als_candidates is not None:
            _save_npy(tmp / "als_candidates.npy", data.als_candidates)
        if data.als_scores is not None:
            _save_npy(tmp / "als_scores.npy", data.als_scores)

        manifest = data.manifest.model_copy(deep=True)
        manifest.format_version = FORMAT_VERSION
        manifest.factors = int(data.item_factors.shape[1])
        manifest.counts = {
            **manifest.counts,
            "customers": len(data.customer_ids),
            "items": len(data.item_ids),
            "copurchase_pairs": int(cp.nnz),
            "training_interactions": int(ui.nnz),
        }
        manifest.files = {
            p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.name != MANIFEST
        }
        (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_manifest(bundle_dir: Path) -> Manifest:
    path = Path(bundle_dir) / MANIFEST
    if not path.is_file():
        raise BundleError(f"{bundle_dir}: no {MANIFEST}; not a Patron bundle")
    try:
        manifest = Manifest.model_validate_json(path.read_text())
    except ValueError as exc:
        raise BundleError(f"{path}: unreadable manifest: {exc}") from None
    if manifest.format_version != FORMAT_VERSION:
        raise BundleError(
            f"{bundle_dir}: bundle format version {manifest.format_version}, "
            f"this code reads version {FORMAT_VERSION}"
        )
    return manifest


def verify_bundle(bundle_dir: Path) -> Manifest:
    """Check format version, presence of every required file and every sha256."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    missing = [f for f in REQUIRED_FILES if f not in manifest.files]
    if missing:
        raise BundleError(f"{bundle_dir}: manifest lists no {', '.join(missing)}")
    for name, digest in manifest.files.items():
        path = bundle_dir / name
        if not path.is_file():
            raise BundleError(f"{bundle_dir}: file {name} is missing")
        actual = sha256_file(path)
        if actual != digest:
            raise BundleError(
                f"{bundle_dir}: checksum mismatch for {name} "
                f"(manifest {digest[:12]}..., file {actual[:12]}...)"
            )
    return manifest


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def load_bundle(bundle_dir: Path, *, verify: bool = True, mmap: bool = False) -> BundleData:
    """Load (and by default verify) a bundle. Raises ``BundleError`` on any mismatch."""
    bundle_dir = Path(bundle_dir)
    manifest = verify_bundle(bundle_dir) if verify else read_manifest(bundle_dir)
    customer_ids = pl.read_parquet(bundle_dir / "customer_ids.parquet")["customer_id"].to_numpy()
    item_ids = pl.read_parquet(bundle_dir / "item_ids.parquet")["item_id"].to_numpy()
    n_u, n_i = len(customer_ids), len(item_ids)
    cp = sparse.csr_matrix(
        (
            _load_npy(bundle_dir / "copurchase_scores.npy", False),
            _load_npy(bundle_dir / "copurchase_indices.npy", False),
            _load_npy(bundle_dir / "copurchase_indptr.npy", False),
        ),
        shape=(n_i, n_i),
    )
    ui_idx = _load_npy(bundle_dir / "user_items_indices.npy", False)
    ui = sparse.csr_matrix(
        (
            np.ones(len(ui_idx), dtype=np.float32),
            ui_idx,
            _load_npy(bundle_dir / "user_items_indptr.npy", False),
        ),
        shape=(n_u, n_i),
    )
    data = BundleData(
        customer_ids=customer_ids,
        item_ids=item_ids,
        user_factors=_load_npy(bundle_dir / "user_factors.npy", mmap),
        item_factors=_load_npy(bundle_dir / "item_factors.npy", mmap),
        copurchase=cp,
        user_items=ui,
        popularity=pl.read_parquet(bundle_dir / "popularity.parquet"),
        catalog=pl.read_parquet(bundle_dir / "catalog.parquet"),
        manifest=manifest,
        als_candidates=(
            _load_npy(bundle_dir / "als_candidates.npy", mmap)
            if "als_candidates.npy" in manifest.files
            else None
        ),
        als_scores=(
            _load_npy(bundle_dir / "als_scores.npy", mmap)
            if "als_scores.npy" in manifest.files
            else None
        ),
    )
    try:
        data.validate_shapes()
    except BundleError as exc:
        raise BundleError(f"{bundle_dir}: {exc}") from None
    return data


def json_dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)

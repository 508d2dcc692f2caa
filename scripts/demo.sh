#!/usr/bin/env bash
# The main job end to end on embedded defaults. Grows as features land.
set -euo pipefail
cd "$(dirname "$0")/.."
PATRON="${PATRON:-.venv/bin/patron}"
export PATRON_WORK_DIR="${PATRON_WORK_DIR:-$PWD/var/demo}"
export OPENBLAS_NUM_THREADS=1
mkdir -p "$PATRON_WORK_DIR"
W="$PATRON_WORK_DIR"

echo "== 1. import the shipped data sets" >&2
"$PATRON" data import ml-100k --out "$W/ml100k_events.parquet" --catalog-out "$W/ml100k_catalog.parquet"
"$PATRON" data import cdnow --out "$W/cdnow_events.parquet"

echo "== 2. validate" >&2
"$PATRON" data validate "$W/ml100k_events.parquet" --catalog "$W/ml100k_catalog.parquet" \
  --quarantine "$W/ml100k_quarantine.parquet" --out "$W/ml100k_clean.parquet"

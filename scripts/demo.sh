#!/usr/bin/env bash
# The main job end to end on embedded defaults (no Redis, no MLflow server, no download):
# import the shipped data, validate, build + publish loyalty features, fit CLV, train, register
# and promote a model in a local MLflow store, serve it, print real recommendations, stop.
set -euo pipefail
cd "$(dirname "$0")/.."
PATRON="${PATRON:-$PWD/.venv/bin/patron}"
PY="${PY:-$PWD/.venv/bin/python}"
export PATRON_WORK_DIR="${PATRON_WORK_DIR:-$PWD/var/demo}"
export OPENBLAS_NUM_THREADS=1
W="$PATRON_WORK_DIR"
rm -rf "$W" && mkdir -p "$W"

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {  # url, seconds, pid of the server (stop waiting if it died)
  for _ in $(seq 1 $(( $2 * 10 ))); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    kill -0 "$3" 2>/dev/null || { echo "the server exited; its log:" >&2; tail -20 "$W/serve.log" >&2; return 1; }
    sleep 0.1
  done
  echo "timed out waiting for $1" >&2
  return 1
}
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
step() { printf '\n== %s\n' "$*" >&2; }
last() { tail -n 1; }  # every patron command prints its JSON result on the last stdout line

step "1. import the shipped data sets (ML-100K as purchases, CDNOW transactions)"
"$PATRON" data import ml-100k --out "$W/ml100k_raw.parquet" --catalog-out "$W/catalog.parquet" | last
"$PATRON" data import cdnow --out "$W/cdnow.parquet" | last

step "2. validate (accepted + quarantined = read)"
"$PATRON" data validate "$W/ml100k_raw.parquet" --catalog "$W/catalog.parquet" \
  --quarantine "$W/quarantine.parquet" --out "$W/events.parquet" | last

step "3. CLV models on the CDNOW sample (published: r=0.2426 alpha=4.4136 a=0.7929 b=2.4259)"
"$PATRON" clv fit --events "$W/cdnow.parquet" --calibration-end 1997-09-30 \
  --holdout-end 1998-06-30 | last

step "4. loyalty features (RFM, tiers, loyalty index, CLV, segments)"
"$PATRON" features build --events "$W/events.parquet" --catalog "$W/catalog.parquet" \
  --out "$W/features" | last
"$PATRON" features build --events "$W/cdnow.parquet" --out "$W/features_cdnow" | last

step "5. publish online features to the embedded Redis-protocol server"
RPORT=$(free_port)
"$PATRON" embedded-redis --port "$RPORT" 2>"$W/embedded-redis.log" &
PIDS+=($!)
export PATRON_REDIS_URL="redis://127.0.0.1:$RPORT/0"
for _ in $(seq 1 100); do "$PY" -c "import redis,sys; redis.Redis.from_url('$PATRON_REDIS_URL').ping()" 2>/dev/null && break; sleep 0.1; done
"$PATRON" features publish --features "$W/features" | last

step "6. train ALS + co-purchase, register in the local MLflow store, promote to champion"
"$PATRON" train --events "$W/events.parquet" --catalog "$W/catalog.parquet" \
  --customer-features "$W/features/customers.parquet" --register | last
"$PATRON" models promote | last

step "7. serve the champion and ask for recommendations"
APORT=$(free_port)
# The embedded server starts a Lua interpreter per connection on first use (slow), so the
# demo allows a longer Redis timeout than production's default of 50 ms.
PATRON_ENV=dev PATRON_REDIS_TIMEOUT_MS=2000 "$PATRON" serve --host 127.0.0.1 --port "$APORT" --workers 1 \
  2>"$W/serve.log" &
PIDS+=($!)
BASE="http://127.0.0.1:$APORT"
wait_http "$BASE/readyz" 120 "${PIDS[-1]}"
curl -fsS "$BASE/v1/model"; echo
for c in 1 13 405; do
  curl -fsS "$BASE/v1/customers/$c/recommendations?k=5"; echo
  curl -fsS "$BASE/v1/customers/$c/profile"; echo
done
curl -fsS "$BASE/v1/items/50/bought-together?k=3"; echo

step "8. a purchase arrives: the item is no longer recommended, tier progress moves"
NOW=$(date -u +%Y-%m-%dT%H:%M:%SZ)
FIRST=$(curl -fsS "$BASE/v1/customers/13/recommendations?k=1" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["item_id"])')
curl -fsS -X POST "$BASE/v1/events" -H 'content-type: application/json' \
  -d "{\"events\":[{\"customer_id\":\"13\",\"item_id\":\"$FIRST\",\"ts\":\"$NOW\",\"quantity\":1,\"unit_price\":25.0}]}"; echo
AFTER=$(curl -fsS "$BASE/v1/customers/13/recommendations?k=5")
echo "$AFTER"
curl -fsS "$BASE/v1/customers/13/profile"; echo
echo "$AFTER" | "$PY" -c '
import json, sys
recs = json.load(sys.stdin)
ids = [i["item_id"] for i in recs["items"]]
ok = sys.argv[1] not in ids and not recs["degraded"] and len(ids) == 5
print(json.dumps({"demo": "ok" if ok else "failed", "purchased": sys.argv[1],
                  "recommended_after_purchase": ids}))
sys.exit(0 if ok else 1)' "$FIRST"

step "demo finished; outputs are under $W"

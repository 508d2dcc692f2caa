"""Redis memory per recorded answer (A/B attribution), on a private redis-server.

    PYTHONPATH=. python benchmarks/ab_memory.py [--answers 200000] [--k 10]

Writes ``--answers`` answer records as the API does (``AttributionStore.write_answers_sync``,
item ids like the benchmark catalog's, model and rules versions of realistic length), then
an impression and a purchase for a tenth of them, and prints ``used_memory`` growth per
answer (the figure docs/ab.md quotes) and per outcome-marked answer.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

# the repo root before benchmarks/ (whose serving.py would shadow the serving package)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serving.attribution.ids import experiment_of, new_id
from serving.attribution.store import AnswerRecord, AttributionStore, Outcome
from tests.services import redis_client, redis_server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--answers", type=int, default=200_000)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as srv:
        client = redis_client(srv.url)
        store = AttributionStore(client, "bench")
        now = time.time()
        exp = experiment_of("12", "13")
        before = int(client.info("memory")["used_memory"])
        records = [
            AnswerRecord(
                new_id(now),
                now,
                exp,
                "champion" if i % 2 else "challenger",
                "12",
                "rules-3f2a9c1d",
                f"c{i:07d}",
                [f"i{(i * 7 + j) % 100_000:06d}" for j in range(args.k)],
            )
            for i in range(args.answers)
        ]
        t0 = time.perf_counter()
        for lo in range(0, len(records), 5_000):
            store.write_answers_sync(records[lo : lo + 5_000])
        write_s = time.perf_counter() - t0
        answered = int(client.info("memory")["used_memory"])
        marked = records[::10]
        outcomes = [Outcome(r.rec_id, "impression", str(r.customer_id), None, now) for r in marked]
        outcomes += [
            Outcome(r.rec_id, "purchase", str(r.customer_id), r.items[0], now + 5, 20.0)
            for r in marked
        ]
        t0 = time.perf_counter()
        for lo in range(0, len(outcomes), 5_000):
            store.record_outcomes_sync(outcomes[lo : lo + 5_000])
        outcome_s = time.perf_counter() - t0
        after = int(client.info("memory")["used_memory"])
        print(
            json.dumps(
                {
                    "answers": args.answers,
                    "k": args.k,
                    "bytes_per_answer": round((answered - before) / args.answers, 1),
                    "bytes_per_answer_with_outcomes": round((after - answered) / len(marked), 1),
                    "answers_written_per_s": round(args.answers / write_s),
                    "outcomes_per_s": round(len(outcomes) / outcome_s),
                }
            )
        )
        client.close()


if __name__ == "__main__":
    main()

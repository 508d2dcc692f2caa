"""Prometheus metrics of one app instance (own registry, so tests can build many apps).

With several uvicorn workers each process exports its own series; scrape each worker or set
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client multiprocess mode) in production.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram(
            "patron_http_request_seconds",
            "Request latency by route template and method.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fallbacks = Counter(
            "patron_fallbacks_total",
            "Recommendations without a model vector: fold_in or popular.",
            ["kind"],
            registry=r,
        )
        self.degraded = Counter(
            "patron_degraded_total",
            "Answers served without Redis (bundle alone).",
            ["route"],
            registry=r,
        )
        self.variants = Counter(
            "patron_variant_total", "Recommendations by A/B variant.", ["variant"], registry=r
        )
        self.reloads = Counter(
            "patron_reloads_total", "Model reloads by outcome.", ["outcome"], registry=r
        )
        self.admin_changes = Counter(
            "patron_admin_changes_total",
            "Shared admin state changes this worker adopted or could not (serving/admin_sync.py).",
            ["what", "outcome"],
            registry=r,
        )
        self.admin_epoch = Gauge(
            "patron_admin_epoch", "The shared admin state epoch this worker serves.", registry=r
        )
        self.events = Counter(
            "patron_events_total", "Events received by outcome.", ["outcome"], registry=r
        )
        self.coalesced = Histogram(
            "patron_coalesced_batch_size",
            "Recommendation requests computed together by the micro-batcher (serving/batch.py).",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128),
            registry=r,
        )
        self.ab_answers = Counter(
            "patron_ab_answers_total",
            "Answers' attribution records: stored in Redis, or dropped (Redis unusable).",
            ["outcome"],
            registry=r,
        )
        self.ab_outcomes = Counter(
            "patron_ab_outcomes_total",
            "Outcome events naming a recommendation_id, by the answer's variant, event type "
            "and result (attributed, repeated, unknown_recommendation, other_customer, "
            "not_recommended, outside_window).",
            ["variant", "type", "result"],
            registry=r,
        )
        self.ab_revenue = Counter(
            "patron_ab_revenue_total",
            "Revenue of purchases attributed to an answer, by its variant.",
            ["variant"],
            registry=r,
        )
        self._children: dict[tuple[str, str], Any] = {}
        self.model_info = Gauge(
            "patron_model_loaded",
            "1 for the loaded model version.",
            ["role", "version"],
            registry=r,
        )

    def variant_counter(self, variant: str) -> Any:
        """``variants.labels(variant)``, looked up once per label (labels() takes a lock)."""
        return self._child("variant", variant, self.variants)

    def fallback_counter(self, kind: str) -> Any:
        return self._child("fallback", kind, self.fallbacks)

    def _child(self, family: str, label: str, metric: Any) -> Any:
        child = self._children.get((family, label))
        if child is None:
            child = self._children[(family, label)] = metric.labels(label)
        return child


class LatencyMiddleware:
    """Pure ASGI middleware timing each request under its route template (not the raw path,
    which would make one series per customer)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.latency.labels(path, scope["method"], str(status[0])).observe(
                time.perf_counter() - start
            )

"""Serving settings: ``PATRON_*`` variables on top of the shared ones (patron/settings.py)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from features.online_scripts import Durability
from patron.settings import Settings
from serving.rules.loader import DEFAULT_RULES_FILE


class ServingSettings(Settings):
    """What the API needs to start: where the bundle comes from, Redis limits, admin, A/B."""

    model_config = SettingsConfigDict(env_prefix="PATRON_", extra="ignore")

    env: Literal["dev", "test", "prod"] = Field(
        default="prod", description="dev relaxes safety checks (admin routes without a key)."
    )
    bundle: Path | None = Field(
        default=None, description="Serve this local bundle directory; skips the MLflow registry."
    )
    challenger_bundle: Path | None = Field(
        default=None, description="Local challenger bundle (with PATRON_BUNDLE)."
    )
    model_alias: str = Field(default="champion", description="Registry alias served by default.")
    challenger_alias: str = Field(default="challenger")
    challenger_traffic: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Share of customers sent to the challenger."
    )
    bundle_cache_dir: Path | None = Field(
        default=None, description="Local cache of downloaded bundles (default work_dir/bundles)."
    )
    reload_interval_s: float = Field(
        default=0.0, ge=0.0, description="Poll the registry alias this often; 0 disables polling."
    )
    admin_routes: bool = Field(default=True, description="Mount POST /admin/reload.")
    admin_sync_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Every worker reads the shared admin state (rules, model pin) this often "
        "and adopts a change (serving/admin_sync.py).",
    )
    admin_api_key: SecretStr | None = Field(default=None)
    redis_timeout_ms: int = Field(
        default=50, ge=1, le=5_000, description="Socket timeout of every Redis call (degrades)."
    )
    redis_retry_s: float = Field(
        default=1.0, gt=0, description="After a Redis failure, skip Redis this long (degraded)."
    )
    max_batch: int = Field(
        default=1_000,
        ge=1,
        le=1_000,
        description="customers per POST batch (the schema caps 1,000)",
    )
    hot_path: bool = Field(
        default=True,
        description="Serve GET recommendations ahead of FastAPI's router (serving/hot_path.py); "
        "same answers, about half the framework cost per request",
    )
    coalesce_max: int = Field(
        default=64,
        ge=0,
        le=1_024,
        description="Concurrent recommendation requests computed together (serving/batch.py); "
        "0 computes each request alone.",
    )
    max_events: int = Field(
        default=1_000,
        ge=1,
        le=1_000,
        description="Most events per POST /v1/events (more: 422); the request schema caps it "
        "at 1000.",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="A connection's request headers must arrive within this many seconds "
        "(serving/http_timeouts.py); else it is closed.",
    )
    keep_alive_s: float = Field(
        default=5.0,
        gt=0,
        le=3_600,
        description="An idle keep-alive connection is closed after this many seconds (behind "
        "a load balancer: longer than its idle timeout).",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Server log lines: text (time level logger message) or one JSON object "
        "per line.",
    )
    events_replicas: int = Field(
        default=0,
        ge=0,
        le=16,
        description="POST /v1/events answers 200 only once this many replicas of each Redis "
        "primary that took the events have them too (Redis WAIT), else 503 (a retry with the "
        "same event ids is applied once). 0: the primary's acknowledgement (replication is "
        "asynchronous: a failover can lose the last events).",
    )
    events_wait_ms: int = Field(
        default=100,
        ge=1,
        le=5_000,
        description="How long POST /v1/events waits for PATRON_EVENTS_REPLICAS replicas.",
    )
    event_max_age_days: int = Field(
        default=90,
        ge=1,
        le=3_650,
        description="Oldest event timestamp POST /v1/events takes, in days (older: 422); "
        "history is imported by the batch jobs.",
    )
    rules_file: Path | None = Field(
        default=None,
        description="Business rules that seed the shared admin state when it holds none "
        "(default config/rules.yaml); after that PUT /admin/rules changes them for every "
        "worker, restarts included.",
    )
    ab_attribution: bool = Field(
        default=True,
        description="Record what every answer served, so outcome events naming its "
        "recommendation_id count for its A/B variant (serving/attribution/); off: the ids "
        "are still minted, nothing is recorded.",
    )
    ab_flush_ms: int = Field(
        default=50,
        ge=1,
        le=10_000,
        description="Answers' records are written to Redis in the background this often.",
    )
    hnsw_ef_search: int = Field(
        default=256,
        ge=16,
        le=4_096,
        description="HNSW search depth (recall vs CPU); 256 passes the recall@10 >= 0.95 test.",
    )
    hnsw_min_items: int = Field(
        default=50_000, ge=1, description="Catalogs at least this big get an HNSW index."
    )

    @model_validator(mode="after")
    def _check(self) -> ServingSettings:
        if self.admin_routes and self.admin_api_key is None and self.env != "dev":
            raise ValueError(
                "admin routes are enabled but PATRON_ADMIN_API_KEY is not set; set a key, "
                "or PATRON_ADMIN_ROUTES=false, or PATRON_ENV=dev"
            )
        if self.challenger_bundle is not None and self.bundle is None:
            raise ValueError("PATRON_CHALLENGER_BUNDLE needs PATRON_BUNDLE (local serving)")
        if self.admin_api_key is not None and len(self.admin_api_key.get_secret_value()) < 8:
            raise ValueError("PATRON_ADMIN_API_KEY must be at least 8 characters long")
        return self

    def cache_dir(self) -> Path:
        return self.bundle_cache_dir or (self.work_dir / "bundle-cache")

    def rules_path(self) -> Path:
        """The rule file the API loads at start: PATRON_RULES_FILE, else config/rules.yaml."""
        return self.rules_file or DEFAULT_RULES_FILE

    def durability(self) -> Durability | None:
        """What POST /v1/events waits for beyond the primary (None: nothing)."""
        if self.events_replicas == 0:
            return None
        return Durability(self.events_replicas, self.events_wait_ms)


@lru_cache
def get_serving_settings() -> ServingSettings:
    return ServingSettings()

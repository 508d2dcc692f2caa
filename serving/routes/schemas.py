"""Typed request and response bodies of the HTTP API (documented in OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from serving.attribution.ids import ID_PATTERN as REC_ID_PATTERN

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$"
ID_DOC = "1-64 characters: letters, digits and _ . : @ - (not first)"
# a tier name; which names exist is the model's (its manifest, from config/tiers.yaml)
Tier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Variant = Literal["champion", "challenger"]

CustomerIdPath = Annotated[str, Path(pattern=ID_PATTERN, max_length=64, description=ID_DOC)]
ItemIdPath = Annotated[str, Path(pattern=ID_PATTERN, max_length=64, description=ID_DOC)]
OptCustomerId = Annotated[
    str | None,
    Query(pattern=ID_PATTERN, max_length=64, description="Personalise for this customer"),
]
K = Annotated[int, Query(ge=1, le=100, description="How many items (1-100)")]
Category = Annotated[str | None, Query(min_length=1, max_length=64)]


class RecQuery(BaseModel):
    """Parameters of GET /v1/customers/{customer_id}/recommendations (serving/routes/params.py)."""

    customer_id: str = Field(pattern=ID_PATTERN, max_length=64, description=ID_DOC)
    k: int = Field(default=10, ge=1, le=100, description="How many items (1-100)")
    category: str | None = Field(default=None, min_length=1, max_length=64)
    exclude: str | None = Field(
        default=None, max_length=4_000, description="Comma-separated item ids to leave out"
    )
    context_item: str | None = Field(
        default=None, pattern=ID_PATTERN, max_length=64, description="Item being viewed"
    )


class RecItem(BaseModel):
    item_id: str
    score: float
    reasons: list[str]


RecommendationId = Annotated[
    str,
    Field(
        description="This answer's id: send it with impression, click, add_to_cart and "
        "purchase events (POST /v1/events) to attribute them to the answer's A/B variant"
    ),
]


class RecommendationResponse(BaseModel):
    recommendation_id: RecommendationId
    customer_id: str
    tier: str
    segment: str | None
    model_version: str
    variant: Variant
    degraded: bool
    rules_version: str
    items: list[RecItem]


class ItemListResponse(BaseModel):
    """Similar / bought-together / popular answers (always from the champion)."""

    recommendation_id: RecommendationId
    item_id: str | None = None
    customer_id: str | None = None
    tier: str | None = None
    model_version: str
    variant: Variant = "champion"
    rules_version: str = ""
    degraded: bool = False
    items: list[RecItem]


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_ids: list[Annotated[str, Field(pattern=ID_PATTERN, max_length=64)]] = Field(
        min_length=1, max_length=1_000, description="1-1000 customer ids"
    )
    k: int = Field(default=10, ge=1, le=100)


class BatchResponse(BaseModel):
    results: list[RecommendationResponse]


MAX_QUANTITY = 10_000.0  # |quantity| of one event
MAX_UNIT_PRICE = 1_000_000.0


class EventIn(BaseModel):
    """One purchase or return, or an outcome of an answer (impression, click, add_to_cart);
    validated one by one so a bad event does not sink the batch."""

    model_config = ConfigDict(extra="forbid")
    customer_id: str = Field(pattern=ID_PATTERN, max_length=64)
    item_id: str | None = Field(
        default=None,
        pattern=ID_PATTERN,
        max_length=64,
        description="The item (required except for an impression, which is of the answer)",
    )
    ts: datetime = Field(
        description="When it happened: at most 5 minutes ahead of the server's clock and at "
        "most PATRON_EVENT_MAX_AGE_DAYS old (older history is imported by the batch jobs)"
    )
    quantity: float = Field(default=1.0, ge=-MAX_QUANTITY, le=MAX_QUANTITY, allow_inf_nan=False)
    unit_price: float | None = Field(default=None, ge=0, le=MAX_UNIT_PRICE, allow_inf_nan=False)
    type: Literal["purchase", "return", "impression", "click", "add_to_cart"] = "purchase"
    recommendation_id: str | None = Field(
        default=None,
        pattern=REC_ID_PATTERN,
        description="The answer this event follows (its recommendation_id): an impression, "
        "a click or add_to_cart of one of its items, or a purchase of one within "
        "PATRON_AB_WINDOW_DAYS, counts for the answer's A/B variant",
    )
    event_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$",
        description="The producer's id of the event: an event sent again with the same id "
        "(a retry) within 7 days is accepted but applied once",
    )
    order_id: str | None = Field(default=None, pattern=ID_PATTERN, max_length=64)
    channel: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,32}$")

    @model_validator(mode="after")
    def _item_needed(self) -> EventIn:
        if self.item_id is None and self.type != "impression":
            raise ValueError(f"item_id: required for a {self.type} event")
        return self


class EventsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: Annotated[
        list[dict[str, Any]],
        WithJsonSchema(
            {"type": "array", "items": EventIn.model_json_schema(), "minItems": 1, "maxItems": 1000}
        ),
    ] = Field(min_length=1, max_length=1_000, description="1-1000 events")


class EventResult(BaseModel):
    index: int
    accepted: bool
    errors: list[str] = Field(default_factory=list)
    attribution: str | None = Field(
        default=None,
        description="With a recommendation_id: attributed, repeated (counted before), "
        "unknown_recommendation (unknown or expired), other_customer, not_recommended (the "
        "item was not in the answer) or outside_window",
    )


class EventsResponse(BaseModel):
    accepted: int
    rejected: int
    attributed: int = Field(default=0, description="Events counted for an answer's variant")
    replayed: int = Field(
        default=0, description="Accepted events whose event_id was applied before: not again"
    )
    results: list[EventResult]


class ProfileResponse(BaseModel):
    customer_id: str
    known: bool
    tier: str
    next_tier: str | None
    spend_to_next_tier: float | None = Field(
        description="Spend still needed for the next tier, after purchases since the last build"
    )
    spend_since_build: float
    segment: str | None
    clv_band: str | None
    clv_low: float | None = Field(
        default=None,
        description="Lower end of the CLV's bootstrap interval (features built with "
        "--clv-intervals; else null)",
    )
    clv_high: float | None = Field(default=None, description="Its upper end")
    churn_risk: float | None
    loyalty_index: float | None
    features_version: str | None


class ModelDescription(BaseModel):
    model_name: str
    version: str
    alias: str | None
    source: str
    trained_at: str
    loaded_at: str
    fingerprint: str
    metrics: dict[str, Any]
    params: dict[str, Any]
    counts: dict[str, int]
    index: str


class ModelInfoResponse(BaseModel):
    champion: ModelDescription
    challenger: ModelDescription | None
    challenger_traffic: float
    notes: list[str]


class ReloadResponse(BaseModel):
    changed: bool
    previous_version: str | None
    champion_version: str
    challenger_version: str | None
    notes: list[str]


class AdminStateResponse(BaseModel):
    """The shared admin state (serving/admin_state.py) and what this worker serves of it."""

    worker: str = Field(description="host:pid of the worker that answered")
    shared_epoch: int | None = Field(description="null: redis unreachable")
    worker_epoch: int = Field(description="the shared epoch this worker has adopted")
    adopted_at: str | None = Field(description="when this worker adopted it (UTC)")
    rules_version: str
    champion_version: str
    challenger_version: str | None
    changes: list[dict[str, Any]] = Field(description="the latest changes, newest first")


class ExperimentsResponse(BaseModel):
    current: str = Field(description="The experiment being served: <champion>~<challenger>")
    since: str = Field(description="First counter day (yyyymmdd, UTC)")
    until: str
    experiments: list[dict[str, Any]] = Field(
        description="Per experiment: its versions, days with answers, and per variant the "
        "counters (answers, impressions, clicks, clicked, carts, carted, purchases, "
        "converted, revenue) with CTR and conversion and their intervals"
    )


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ReadyResponse(BaseModel):
    ready: bool
    model_version: str | None
    reasons: list[str] = Field(description="Why not ready, or notes (e.g. serving from cache)")


class ErrorResponse(BaseModel):
    detail: str | list[Any]


class BodyErrorResponse(BaseModel):
    """FastAPI's 422 for a body that is not the documented shape at all."""

    detail: list[dict[str, Any]]

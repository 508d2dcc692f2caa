"""GET /v1/customers/{id}/profile: the loyalty view of one customer."""

from __future__ import annotations

from fastapi import APIRouter

from serving.errors import Unavailable
from serving.routes.deps import GatewayDep, ModelsDep
from serving.routes.schemas import CustomerIdPath, ErrorResponse, ProfileResponse

router = APIRouter(prefix="/v1", tags=["customers"])


@router.get(
    "/customers/{customer_id}/profile",
    response_model=ProfileResponse,
    responses={503: {"model": ErrorResponse}},
    summary="Tier, progress to the next tier, segment, CLV band, churn risk, loyalty index",
)
async def profile(
    customer_id: CustomerIdPath, models: ModelsDep, gateway: GatewayDep
) -> ProfileResponse:
    row = await gateway.customer(customer_id)
    if row is None:
        why = gateway.last_error or (
            "no published feature version" if gateway.unpublished else "redis unreachable"
        )
        raise Unavailable(f"online features unavailable ({why}); retry later")
    tier = row.tier or models.champion.tiers[0]
    next_tier = row.next_tier
    remaining = None
    if row.progress_to_next is not None:
        remaining = max(0.0, float(row.progress_to_next) - float(row.spend_since_build))
    return ProfileResponse(
        customer_id=customer_id,
        known=row.known,
        tier=tier,
        next_tier=next_tier,
        spend_to_next_tier=remaining,
        spend_since_build=float(row.spend_since_build),
        segment=row.segment,
        clv_band=row.clv_band,
        clv_low=row.clv_low,
        clv_high=row.clv_high,
        churn_risk=row.churn_risk,
        loyalty_index=row.loyalty_index,
        features_version=row.version,
    )

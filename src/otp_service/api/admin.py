"""Admin API for internal callers: `Authorization: Bearer <one of OTP_ADMIN_API_KEYS>`."""

import hmac
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel, Field

from otp_service.api.deps import ReputationDep, SuppressionServiceDep, UsageServiceDep
from otp_service.api.schemas import problem_responses
from otp_service.db.models import Suppression
from otp_service.delivery.reputation import ProviderHealth
from otp_service.errors import Unauthorized


class AdminKeys:
    """The bearer keys of `/api/v1/admin/*` (OTP_ADMIN_API_KEYS), built once by the lifespan."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in keys]

    def check(self, authorization: str) -> None:
        scheme, _, presented = authorization.partition(" ")
        presented_bytes = presented.strip().encode()
        # Compare against every key, always, in constant time: neither which key nor how much of
        # it matched shows in the response time.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(presented_bytes, key)
        if scheme.lower() != "bearer" or not presented_bytes or not matched:
            raise Unauthorized()


async def require_admin(request: Request) -> None:
    keys: AdminKeys = request.state.admin_keys
    keys.check(request.headers.get("authorization", ""))


router = APIRouter(
    prefix="/api/v1/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=problem_responses({401: ["unauthorized"], 503: ["unavailable"]}),
)


class SuppressionOut(BaseModel):
    email: str
    reason: str
    source: str
    note: str | None
    permanent: bool
    bounce_count: int
    complaint_count: int
    provider_message_id: str | None
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, row: Suppression) -> "SuppressionOut":
        return cls(
            email=row.email, reason=row.reason, source=row.source, note=row.note, permanent=row.permanent,
            bounce_count=row.bounce_count, complaint_count=row.complaint_count,
            provider_message_id=row.provider_message_id, created_at=row.created_at.isoformat(),
            updated_at=row.updated_at.isoformat(),
        )  # fmt: skip


class SuppressionPage(BaseModel):
    items: list[SuppressionOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page; null at the end")


# PostgreSQL text cannot hold a NUL character: free text that reaches the database is refused
# here (422, the caller's mistake) rather than failing there (a 503 that blames the database).
# Found by schemathesis on the list filter; the note had the same hole.
_NO_NUL = r"^[^\x00]*$"
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"  # stricter, for addresses: they never hold a control character


class SuppressionIn(BaseModel):
    reason: Literal["manual"] = "manual"
    note: str | None = Field(default=None, max_length=2000, pattern=_NO_NUL)


class ChannelUsage(BaseModel):
    sent_24h: int
    limit_24h: int
    remaining: int


class UsageOut(BaseModel):
    channels: dict[str, ChannelUsage]
    send_rate: dict[str, float]
    delivered_24h: int
    bounces_24h: int
    complaints_24h: int
    bounce_rate: float | None
    complaint_rate: float | None
    workers_alive: int = Field(description="Delivery workers whose heartbeat is current")


@router.get("/suppressions", summary="Suppressed addresses, newest first")
async def list_suppressions(
    suppressions: SuppressionServiceDep,
    email: Annotated[
        str | None, Query(max_length=320, pattern=_NO_CONTROL, description="An address, or part of one")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> SuppressionPage:
    page = await suppressions.list(email=email, limit=limit, cursor=cursor)
    return SuppressionPage(items=[SuppressionOut.of(r) for r in page.items], next_cursor=page.next_cursor)


@router.get(
    "/suppressions/{email}", summary="One suppression", responses=problem_responses({404: ["not_found"]})
)
async def get_suppression(email: str, suppressions: SuppressionServiceDep) -> SuppressionOut:
    return SuppressionOut.of(await suppressions.get(email))


@router.put(
    "/suppressions/{email}",
    summary="Suppress an address by hand (201 new, 200 updated)",
    responses={
        201: {"model": SuppressionOut, "description": "Created"},
        **problem_responses({422: ["invalid_request"]}),
    },
)
async def put_suppression(
    email: str, body: SuppressionIn, suppressions: SuppressionServiceDep, response: Response
) -> SuppressionOut:
    row, created = await suppressions.put(email, reason=body.reason, note=body.note)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return SuppressionOut.of(row)


@router.delete(
    "/suppressions/{email}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a suppression",
    responses=problem_responses({404: ["not_found"]}),
)
async def delete_suppression(email: str, suppressions: SuppressionServiceDep) -> Response:
    await suppressions.delete(email)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/usage", summary="Sends against the caps, send rate, bounces, complaints (24 h), workers alive")
async def usage(service: UsageServiceDep) -> UsageOut:
    u = await service.usage()
    channels = {
        c: ChannelUsage(sent_24h=n, limit_24h=u.limits[c], remaining=max(0, u.limits[c] - n))
        for c, n in u.sent_24h.items()
    }
    return UsageOut(
        channels=channels,
        send_rate={
            "limit_per_second": float(u.send_rate_limit),
            "current_per_second": round(u.sent_last_minute / 60, 3),
        },
        delivered_24h=u.delivered_24h,
        bounces_24h=u.bounces_24h,
        complaints_24h=u.complaints_24h,
        bounce_rate=round(u.bounces_24h / u.delivered_24h, 5) if u.delivered_24h else None,
        complaint_rate=round(u.complaints_24h / u.delivered_24h, 5) if u.delivered_24h else None,
        workers_alive=u.workers_alive,
    )


class ProviderHealthOut(BaseModel):
    provider: str
    paused: bool
    reason: str | None
    sent: int
    bounces: int
    complaints: int
    bounce_rate: float | None
    complaint_rate: float | None
    since: str
    max_bounce_rate: float
    max_complaint_rate: float
    min_volume: int


def _health(h: ProviderHealth) -> ProviderHealthOut:
    return ProviderHealthOut(
        provider=h.provider, paused=h.paused, reason=h.reason, sent=h.sent, bounces=h.bounces,
        complaints=h.complaints, bounce_rate=h.bounce_rate, complaint_rate=h.complaint_rate,
        since=h.since.isoformat(), max_bounce_rate=h.max_bounce_rate,
        max_complaint_rate=h.max_complaint_rate, min_volume=h.min_volume,
    )  # fmt: skip


@router.get("/reputation", summary="Bounce and complaint rates per provider, and what the guard paused")
async def reputation(guard: ReputationDep) -> list[ProviderHealthOut]:
    return [_health(h) for h in await guard.report()]


@router.post(
    "/reputation/{provider}/resume",
    summary="Resume a provider the guard paused; its rates count again from now",
    responses=problem_responses({404: ["not_found"]}),
)
async def resume_provider(provider: str, guard: ReputationDep) -> list[ProviderHealthOut]:
    await guard.resume(provider)
    return [_health(h) for h in await guard.check()]

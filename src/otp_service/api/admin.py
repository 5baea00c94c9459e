"""Admin API for internal callers: `Authorization: Bearer <one of OTP_ADMIN_API_KEYS>`."""

import hmac
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel, Field

from otp_service.api.deps import (
    AuditLogDep,
    DeliveryLookupDep,
    ReputationDep,
    SuppressionServiceDep,
    UsageServiceDep,
)
from otp_service.api.schemas import problem_responses
from otp_service.audit.service import key_fingerprint
from otp_service.db.models import Suppression
from otp_service.delivery.reputation import ProviderHealth
from otp_service.errors import InvalidRequest, ServiceError, Unauthorized
from otp_service.validation.address import normalize_email


class AdminKeys:
    """The bearer keys of `/api/v1/admin/*` (OTP_ADMIN_API_KEYS), built once by the lifespan."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [(k.encode(), key_fingerprint(k.encode())) for k in keys]

    def check(self, authorization: str) -> str:
        """The presented key's fingerprint (what the audit log names), or Unauthorized."""
        scheme, _, presented = authorization.partition(" ")
        presented_bytes = presented.strip().encode()
        # Compare against every key, always, in constant time: neither which key nor how much of
        # it matched shows in the response time.
        matched = ""
        for key, fingerprint in self._keys:
            if hmac.compare_digest(presented_bytes, key):
                matched = fingerprint
        if scheme.lower() != "bearer" or not presented_bytes or not matched:
            raise Unauthorized()
        return matched


async def require_admin(request: Request) -> str:
    keys: AdminKeys = request.state.admin_keys
    return keys.check(request.headers.get("authorization", ""))


AdminDep = Annotated[str, Depends(require_admin)]
"""The calling key's fingerprint (FastAPI solves the router's dependency once per request)."""


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
    provider_event_id: str | None = Field(
        description="The provider event that caused it (source resend: svix-id; ses: SNS MessageId)"
    )
    provider_message_id: str | None
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, row: Suppression) -> "SuppressionOut":
        return cls(
            email=row.email, reason=row.reason, source=row.source, note=row.note, permanent=row.permanent,
            bounce_count=row.bounce_count, complaint_count=row.complaint_count,
            provider_event_id=row.provider_event_id, provider_message_id=row.provider_message_id,
            created_at=row.created_at.isoformat(),
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
    email: str, body: SuppressionIn, suppressions: SuppressionServiceDep, response: Response, admin: AdminDep
) -> SuppressionOut:
    row, created = await suppressions.put(email, reason=body.reason, note=body.note, actor=admin)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return SuppressionOut.of(row)


@router.delete(
    "/suppressions/{email}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a suppression",
    responses=problem_responses({404: ["not_found"]}),
)
async def delete_suppression(email: str, suppressions: SuppressionServiceDep, admin: AdminDep) -> Response:
    await suppressions.delete(email, actor=admin)
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
async def resume_provider(
    provider: str, guard: ReputationDep, audit: AuditLogDep, admin: AdminDep
) -> list[ProviderHealthOut]:
    await guard.resume(provider)
    await audit.record(actor=admin, action="reputation.resume", target=provider)
    return [_health(h) for h in await guard.check()]


class AuditOut(BaseModel):
    at: str
    key_fingerprint: str = Field(description="First 16 hex digits of the key's SHA-256; never the key")
    action: str = Field(description="suppression.put | suppression.delete | reputation.resume")
    target: str = Field(description="The address, or the provider resumed")
    note: str | None


class AuditPageOut(BaseModel):
    items: list[AuditOut]
    next_cursor: str | None


@router.get("/audit", summary="Admin writes, newest first")
async def list_audit(
    audit: AuditLogDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> AuditPageOut:
    page = await audit.list(limit=limit, cursor=cursor)
    items = [
        AuditOut(
            at=e.created_at.isoformat(),
            key_fingerprint=e.key_fingerprint,
            action=e.action,
            target=e.target,
            note=e.note,
        )
        for e in page.items
    ]
    return AuditPageOut(items=items, next_cursor=page.next_cursor)


class ProviderEventOut(BaseModel):
    kind: str = Field(description="delivered | delayed | bounced | complained | sent | suppressed | …")
    type: str = Field(description="The provider's event type")
    provider: str
    event_id: str
    occurred_at: str | None
    received_at: str
    suppressed: bool = Field(description="The event suppressed the address")


class DeliveryOut(BaseModel):
    job_id: str
    outcome: str = Field(description="sent | suppressed | superseded | expired | failed")
    queued_at: str | None
    sent_at: str | None = Field(description="When the provider accepted it (outcome sent)")
    recorded_at: str
    provider: str | None
    provider_message_id: str | None
    attempts: int = Field(description="Provider calls made for the job")
    events: list[ProviderEventOut]


class DeliveryPageOut(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@router.get(
    "/deliveries", summary="An address's deliveries, newest first, with the provider events about each"
)
async def list_deliveries(
    lookup: DeliveryLookupDep,
    email: Annotated[str, Query(max_length=320, pattern=_NO_CONTROL, description="The address")],
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> DeliveryPageOut:
    try:
        address = normalize_email(email)
    except ServiceError:
        raise InvalidRequest("email: not a valid address") from None
    page = await lookup.list(address, limit=limit, cursor=cursor)
    items = []
    for view in page.items:
        r = view.record
        items.append(DeliveryOut(
            job_id=r.job_id, outcome=r.outcome, queued_at=_iso(r.queued_at),
            sent_at=_iso(r.created_at) if r.outcome == "sent" else None, recorded_at=r.created_at.isoformat(),
            provider=r.provider, provider_message_id=r.provider_message_id, attempts=r.attempts,
            events=[ProviderEventOut(kind=e.kind, type=e.type, provider=e.provider, event_id=e.event_id,
                                     occurred_at=_iso(e.occurred_at), received_at=e.received_at.isoformat(),
                                     suppressed=e.suppressed) for e in view.events],
        ))  # fmt: skip
    return DeliveryPageOut(items=items, next_cursor=page.next_cursor)

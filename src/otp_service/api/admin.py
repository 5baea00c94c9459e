"""Admin API for internal callers: `Authorization: Bearer <one of OTP_ADMIN_API_KEYS>`."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from otp_service.api.admin_schemas import (
    NO_CONTROL,
    AuditOut,
    AuditPageOut,
    BlockOut,
    BlocksOut,
    DeliveryOut,
    DeliveryPageOut,
    LimitsOut,
    ProviderHealthOut,
    StatsOut,
    SuppressionIn,
    SuppressionOut,
    SuppressionPage,
    UsageOut,
)
from otp_service.api.deps import (
    AdminDep,
    AuditLogDep,
    DeliveryLookupDep,
    DeliveryStatsDep,
    LimitsLookupDep,
    ReputationDep,
    SuppressionServiceDep,
    UsageServiceDep,
    require_admin,
)
from otp_service.api.schemas import problem_responses
from otp_service.errors import InvalidRequest, ServiceError
from otp_service.settings import APP_ID
from otp_service.validation.address import normalize_email

APP_PATTERN = f"^(?:{APP_ID.pattern})?$"
"""An application id (CONTRACT §8, settings.APP_ID), or '' for the service-wide application."""
AppParam = Annotated[
    str,
    Query(
        pattern=APP_PATTERN,
        description="The application (CONTRACT §8); absent or empty: the service-wide one, as the "
        "unprefixed endpoints are. An id OTP_APPS does not configure: 404 not_found",
    ),
]

router = APIRouter(
    prefix="/api/v1/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=problem_responses({401: ["unauthorized"], 503: ["unavailable"]}),
)


@router.get("/suppressions", summary="Suppressed addresses, newest first")
async def list_suppressions(
    suppressions: SuppressionServiceDep,
    email: Annotated[
        str | None, Query(max_length=320, pattern=NO_CONTROL, description="An address, or part of one")
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


@router.get(
    "/stats",
    summary="Sends, deliveries, verifications, failed verifies and time to inbox in a window (CONTRACT §3)",
    responses=problem_responses({404: ["not_found"]}),
)
async def stats(
    service: DeliveryStatsDep,
    hours: Annotated[
        int, Query(ge=1, le=24 * 30, description="The window: the current hour and this many before it")
    ] = 24,
    app: AppParam = "",
) -> StatsOut:
    return StatsOut.of(await service.stats(hours, app))


@router.get(
    "/usage",
    summary="Sends against the caps, send rate, bounces, complaints (24 h), workers alive",
    description="With `app` (CONTRACT §8), `application` is that application's own part of the 24 h "
    "(its sends handled and emailed, the bounces and complaints about them; `app=` alone: the "
    "service-wide application's); the rest is shared by every application. Without it, `application` "
    "is null.",
    responses=problem_responses({404: ["not_found"]}),
)
async def usage(
    service: UsageServiceDep,
    app: Annotated[str | None, Query(pattern=APP_PATTERN, description="The application")] = None,
) -> UsageOut:
    return UsageOut.of(await service.usage(app))


@router.get("/reputation", summary="Bounce and complaint rates per provider, and what the guard paused")
async def reputation(guard: ReputationDep) -> list[ProviderHealthOut]:
    return [ProviderHealthOut.of(h) for h in await guard.report()]


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
    return [ProviderHealthOut.of(h) for h in await guard.check()]


@router.get("/blocks", summary="The clients and subnets the reputation guard blocked, newest first")
async def list_blocks(guard: ReputationDep) -> BlocksOut:
    return BlocksOut(items=[BlockOut.of(b) for b in await guard.blocks()])


@router.delete(
    "/blocks/{source:path}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Lift a block: the CIDR as listed, its / as is (DELETE /api/v1/admin/blocks/203.0.113.7/32)",
    responses=problem_responses({404: ["not_found"]}),
)
async def lift_block(source: str, guard: ReputationDep, audit: AuditLogDep, admin: AdminDep) -> Response:
    await guard.lift(source)
    await audit.record(actor=admin, action="reputation.unblock", target=source)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/limits",
    summary="Why a send would be refused now: every limit for an address and a client IP",
    description=(
        'For support staff answering "I never got my code": the address\'s mailbox key, cooldown, '
        "daily count and cap (its remembered sources' own too), suppression, live code; the IP's "
        "client and subnet rates, the low-conversion guard, a reputation block; the recipient "
        "domain's count and the global cap; and `would_refuse`, the code a send would get now. "
        "Either parameter may be given alone. With `app`, as that application's send would decide (its "
        "own cooldown, daily cap, remembered sources and live code; the rest is shared). Reads only: "
        "nothing changes any counter."
    ),
    responses=problem_responses({404: ["not_found"], 422: ["invalid_request"]}),
)
async def limits(
    lookup: LimitsLookupDep,
    # No control character: an address never holds one, and PostgreSQL refuses a NUL in text.
    email: Annotated[str | None, Query(max_length=320, pattern=NO_CONTROL)] = None,
    ip: Annotated[str | None, Query(max_length=64)] = None,
    app: AppParam = "",
) -> LimitsOut:
    return LimitsOut.model_validate(await lookup.explain(email, ip, app))


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


@router.get(
    "/deliveries",
    summary="An address's deliveries, newest first, with the provider events about each",
    responses=problem_responses({404: ["not_found"]}),
)
async def list_deliveries(
    lookup: DeliveryLookupDep,
    email: Annotated[str, Query(max_length=320, pattern=NO_CONTROL, description="The address")],
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    app: Annotated[
        str | None,
        Query(
            pattern=APP_PATTERN,
            description="Only this application's deliveries (CONTRACT §8; `app=` alone: the service-wide "
            "application's); absent: every application's. An id OTP_APPS does not configure: 404 not_found",
        ),
    ] = None,
) -> DeliveryPageOut:
    try:
        address = normalize_email(email)
    except ServiceError:
        raise InvalidRequest("email: not a valid address") from None
    page = await lookup.list(address, limit=limit, cursor=cursor, app=app)
    return DeliveryPageOut(items=[DeliveryOut.of(view) for view in page.items], next_cursor=page.next_cursor)

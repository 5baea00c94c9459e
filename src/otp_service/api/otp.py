"""Send and verify. Both are FastRoutes (api/routing.py): declared once here, for the OpenAPI
document and for every request."""

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request, Response, status
from fastapi.responses import JSONResponse

from otp_service.api.deps import (
    AppSendDep,
    AppStatusDep,
    AppVerifyDep,
    ClientDep,
    OtpServiceDep,
    get_client,
    get_otp_service,
)
from otp_service.api.problems import REPLAYED_HEADER
from otp_service.api.routing import FastRoute, LimitedRoute, Refusal, refuses
from otp_service.api.schemas import (
    ApprovedOut,
    PendingOut,
    SendIn,
    SendStatusOut,
    VerifyIn,
    problem_responses,
)
from otp_service.errors import InvalidEmail
from otp_service.net import Client
from otp_service.otp.service import OtpService

PREFIX = "/api/v1/auth/otp"
# A body over 4 KiB is 413 payload_too_large (FastRoute.max_body), refused before it is parsed.
router = APIRouter(prefix=PREFIX, tags=["otp"], route_class=FastRoute)


async def count_malformed_send(request: Request) -> None:
    """Every send counts against the caller's rates, a malformed one included (§3)."""
    otp = await get_otp_service(request)
    await otp.count_refused(await get_client(request))


_IDEMPOTENCY = (
    "Optional, 1-255 visible ASCII characters (a UUID is a good choice). The same send repeated "
    "with the same key and the same body within 10 minutes answers exactly what the first "
    "answered, with `Idempotent-Replayed: true`, and has no other effect: no new code, no email, "
    "no cooldown or daily cap movement (the client's rates still count it). The same key with a "
    "different body is 422 `idempotency_key_reused`. Retry a lost answer with the same key."
)

_SEND_ERRORS: dict[int | str, dict[str, Any]] = problem_responses(
    {
        422: ["invalid_email", "idempotency_key_reused", "invalid_request"],
        400: ["disposable_email", "email_typo", "undeliverable_email", "captcha_failed", "captcha_required"],
        413: ["payload_too_large"],
        429: ["rate_limited", "cooldown", "daily_limit", "domain_limit"],
        503: ["global_limit", "sending_paused", "unavailable"],
    }
)
_VERIFY_ERRORS: dict[int | str, dict[str, Any]] = problem_responses(
    {
        422: ["invalid_request"],
        400: ["invalid_code", "max_attempts_reached", "code_expired"],
        413: ["payload_too_large"],
        429: ["rate_limited"],
        503: ["unavailable"],
    }
)


_SEND_DOC: dict[str, Any] = dict(
    status_code=status.HTTP_202_ACCEPTED,
    response_model=PendingOut,
    summary="Email a one-time code to an address",
    description=(
        "Validates the address, applies the per-client, per-address and service-wide limits and "
        "queues the email. Answers 202 without waiting for the email provider. A suppressed "
        "address (bounced, complained, blocked by an operator) gets exactly the same answer, "
        "so the response never reveals who is a user."
    ),
    responses={
        202: {
            "description": "Accepted: the code is on its way (or the address is suppressed: the same answer)",
            "headers": {
                "Idempotent-Replayed": {
                    "description": "`true`: the answer of an earlier request with the same Idempotency-Key",
                    "schema": {"type": "string", "enum": ["true"]},
                }
            },
        },
        **_SEND_ERRORS,
    },
)


@router.post("/send", **_SEND_DOC)
@refuses(Refusal(InvalidEmail, count_malformed_send))  # verify keeps the default invalid_request
async def send_code(
    body: SendIn, otp: OtpServiceDep, client: ClientDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", description=_IDEMPOTENCY)] = None,
) -> PendingOut | Response:  # fmt: skip
    return await _send(otp, body, client, idempotency_key)


async def _send(
    otp: OtpService, body: SendIn, client: Client, idempotency_key: str | None
) -> PendingOut | Response:
    accepted = await otp.send(
        body.email,
        client,
        captcha_token=body.captcha_token,
        locale=body.locale,
        idempotency_key=idempotency_key,
    )
    pending = PendingOut(
        status="pending", expires_in=accepted.expires_in, resend_after=accepted.resend_after,
        send_id=accepted.send_id,
    )  # fmt: skip
    if accepted.replayed:
        return JSONResponse(pending.model_dump(mode="json"), 202, headers={REPLAYED_HEADER: "true"})
    return pending


async def send_status(send_id: str, otp: OtpServiceDep, client: ClientDep) -> SendStatusOut:
    return await _status(otp, send_id, client)


async def _status(otp: OtpService, send_id: str, client: Client) -> SendStatusOut:
    state = await otp.send_status(send_id, client)
    # Whole seconds: the answer tells nothing sending mail would not (CONTRACT §3), and no
    # millisecond detail of the worker's path (a provider call, or none: delivery/pace.py) shows.
    updated = datetime.fromtimestamp(state.updated_ms // 1000, UTC)
    return SendStatusOut(status=state.status.value, updated_at=updated.isoformat(timespec="seconds"))


_STATUS_DOC: dict[str, Any] = dict(
    methods=["GET"],
    route_class_override=LimitedRoute,
    response_model=SendStatusOut,
    summary='What became of one send (a "didn\'t get it?" screen)',
    description=(
        "For the client holding the send_id of a 202: queued, sent, delivered, delayed, "
        "undeliverable, failed or superseded. Poll every few seconds while the screen is open. "
        "Kept for the code's lifetime plus an hour; then 404 not_found."
    ),
    responses=problem_responses({404: ["not_found"], 429: ["rate_limited"], 503: ["unavailable"]}),
)
# No body, so not a FastRoute: a plain (size-limited) route in the same table.
router.add_api_route("/sends/{send_id}", send_status, **_STATUS_DOC)

_VERIFY_DOC: dict[str, Any] = dict(
    summary="Check a code; a code verifies once",
    description=(
        "Wrong codes count towards the attempt limit and never extend the code's lifetime. "
        "A code that is not the configured number of digits is refused with 422 and not counted."
    ),
    responses=_VERIFY_ERRORS,
    response_model_exclude_none=True,
)


@router.post("/verify", **_VERIFY_DOC)
async def verify_code(body: VerifyIn, otp: OtpServiceDep, client: ClientDep) -> ApprovedOut:
    return await _verify(otp, body, client)


async def _verify(otp: OtpService, body: VerifyIn, client: Client) -> ApprovedOut:
    verified = await otp.verify(body.email, body.code, client)
    test = True if verified.test else None  # only a test recipient's answer names it
    if verified.token is None:
        return ApprovedOut(status="approved", test=test, email=verified.email)
    return ApprovedOut(
        status="approved",
        test=test,
        email=verified.email,
        token=verified.token,
        token_type="Bearer",  # noqa: S106 - the token type, not a secret
        expires_in=verified.token_expires_in,
    )


# Applications (CONTRACT §8): the same three endpoints under /api/v1/apps/{app}/, documented once
# with the application as a path parameter. Included only when OTP_APPS names some, after the
# unprefixed routes, which are matched first and so cost nothing more.
APPS_PREFIX = "/api/v1/apps/{app}"
AppId = Annotated[str, Path(description="The application's id (OTP_APPS); unknown: 404 not_found")]
apps_router = APIRouter(
    prefix=f"{APPS_PREFIX}{PREFIX.removeprefix('/api/v1')}", tags=["applications"], route_class=FastRoute
)


@apps_router.post("/send", **_SEND_DOC)
@refuses(Refusal(InvalidEmail, count_malformed_send))
async def app_send_code(
    app: AppId, body: SendIn, otp: AppSendDep, client: ClientDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", description=_IDEMPOTENCY)] = None,
) -> PendingOut | Response:  # fmt: skip
    return await _send(otp, body, client, idempotency_key)


async def app_send_status(app: AppId, send_id: str, otp: AppStatusDep, client: ClientDep) -> SendStatusOut:
    return await _status(otp, send_id, client)


apps_router.add_api_route("/sends/{send_id}", app_send_status, **_STATUS_DOC)


@apps_router.post("/verify", **_VERIFY_DOC)
async def app_verify_code(app: AppId, body: VerifyIn, otp: AppVerifyDep, client: ClientDep) -> ApprovedOut:
    return await _verify(otp, body, client)

"""The two hot routes. They answer domain errors themselves with the same problem+json as the
app-wide handler (api/problems.py): raising through Starlette's middleware stack cost ~7% of a
rejected request's CPU (py-spy), and most OTP traffic under attack is rejected."""

import json
from functools import lru_cache
from typing import Any

from fastapi import APIRouter, Request, Response, status

from otp_service.api.deps import OtpCallDep
from otp_service.api.problems import problem_response
from otp_service.api.schemas import (
    ApprovedOut,
    PendingOut,
    SendIn,
    VerifyIn,
    problem_responses,
)
from otp_service.errors import ServiceError
from otp_service.metrics import REQUESTS

router = APIRouter(prefix="/api/v1/auth/otp", tags=["otp"])

_SEND_ERRORS: dict[int | str, dict[str, Any]] = problem_responses(
    {
        422: ["invalid_email"],
        400: ["disposable_email", "email_typo"],
        429: ["rate_limited", "cooldown", "daily_limit"],
        503: ["global_limit", "sending_paused", "unavailable"],
    }
)
_VERIFY_ERRORS: dict[int | str, dict[str, Any]] = problem_responses(
    {
        422: ["invalid_request"],
        400: ["invalid_code", "max_attempts_reached", "code_expired"],
        429: ["rate_limited"],
        503: ["unavailable"],
    }
)


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


@lru_cache(maxsize=8)
def _pending_body(expires_in: int, resend_after: int) -> bytes:
    """Encoded once: every accepted (or suppressed) address gets these same bytes."""
    return _json({"status": "pending", "expires_in": expires_in, "resend_after": resend_after})


# Label children resolved once, not per request.
_SENDS = REQUESTS.labels("send")
_VERIFIES = REQUESTS.labels("verify")


@router.post(
    "/send",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=PendingOut,
    summary="Email a one-time code to an address",
    description=(
        "Validates the address, applies the per-IP, per-address and service-wide limits and "
        "queues the email. Answers 202 without waiting for the email provider. A suppressed "
        "address (bounced, complained, blocked by an operator) gets exactly the same answer, "
        "so the response never reveals who is a user."
    ),
    responses=_SEND_ERRORS,
)
async def send_code(body: SendIn, call: OtpCallDep, request: Request) -> Response:
    try:
        accepted = await call.otp.send(body.email, call.client_ip)
    except ServiceError as exc:
        return problem_response(exc, request)
    _SENDS.inc()
    return Response(
        _pending_body(accepted.expires_in, accepted.resend_after), 202, media_type="application/json"
    )


@router.post(
    "/verify",
    response_model=ApprovedOut,
    summary="Check a code; a code verifies once",
    description=(
        "Wrong codes count towards the attempt limit and never extend the code's lifetime. "
        "A code that is not the configured number of digits is refused with 422 and not counted."
    ),
    responses=_VERIFY_ERRORS,
)
async def verify_code(body: VerifyIn, call: OtpCallDep, request: Request) -> Response:
    try:
        verified = await call.otp.verify(body.email, body.code, call.client_ip)
    except ServiceError as exc:
        return problem_response(exc, request)
    _VERIFIES.inc()
    out: dict[str, Any] = {"status": "approved", "email": verified.email}
    if verified.token is not None:
        out.update(token=verified.token, token_type="Bearer", expires_in=verified.token_expires_in)  # noqa: S106
    return Response(_json(out), 200, media_type="application/json")

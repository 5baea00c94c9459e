"""The two OTP routes as FastAPI declares them: their OpenAPI operations, and the answer for the
requests the plain-ASGI hot path (api/hot.py) passes on. Both call the same `answer_*`
functions, which answer domain errors with the app's problem+json directly: raising through
Starlette's middleware stack cost ~7% of a rejected request's CPU (py-spy)."""

from typing import Any

from fastapi import APIRouter, Request, Response, status

from otp_service.api.deps import OtpCallDep
from otp_service.api.hot import answer_send, answer_verify
from otp_service.api.schemas import (
    ApprovedOut,
    PendingOut,
    SendIn,
    VerifyIn,
    problem_responses,
)

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
    return (await answer_send(call.otp, body, call.client_ip, request.url.path)).to_response()


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
    return (await answer_verify(call.otp, body, call.client_ip, request.url.path)).to_response()

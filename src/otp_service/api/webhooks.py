from fastapi import APIRouter, Request

from otp_service.api.deps import WebhookServiceDep
from otp_service.api.routing import LimitedRoute
from otp_service.api.schemas import WebhookOut, problem_responses


class EventRoute(LimitedRoute):
    max_body = 64 * 1024
    """A provider event is a few KiB; a larger body is 413, refused before it is read whole or verified."""


router = APIRouter(prefix="/api/v1/auth", tags=["webhooks"], route_class=EventRoute)

_ERRORS = problem_responses({400: ["webhook_rejected"], 413: ["payload_too_large"], 503: ["unavailable"]})


@router.post(
    "/resend-events/",
    summary="Resend webhooks (bounces, complaints), verified with Svix",
    description=(
        "Verified against the raw body with `svix-id`, `svix-timestamp`, `svix-signature` "
        "(tolerance 5 minutes). `email.bounced`, `email.complained` and `email.suppressed` "
        "suppress every address in `data.to`; other types are accepted and ignored. A repeated "
        "`svix-id` is answered 200 and processed once."
    ),
    responses=_ERRORS,
)
async def resend_events(request: Request, webhooks: WebhookServiceDep) -> WebhookOut:
    body = await request.body()
    outcome = await webhooks.resend(body, request.headers)
    return WebhookOut(status=outcome)


@router.post(
    "/ses-events/",
    summary="SES notifications delivered by SNS over HTTPS",
    description=(
        "The body is SNS's JSON (sent as text/plain). Signature versions 1 and 2 are verified "
        "against the certificate at `SigningCertURL` (https, host matching "
        "OTP_SNS_CERT_HOST_PATTERN, `.pem`); `TopicArn` must be allowed and `Timestamp` within "
        "an hour. Subscription confirmations are confirmed once; permanent bounces and "
        "complaints suppress their recipients; a repeated `MessageId` is processed once."
    ),
    responses=_ERRORS,
)
async def ses_events(request: Request, webhooks: WebhookServiceDep) -> WebhookOut:
    body = await request.body()
    outcome = await webhooks.ses(body, request.headers.get("x-amz-sns-message-type"))
    return WebhookOut(status=outcome)

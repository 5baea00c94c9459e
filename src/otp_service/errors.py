"""Domain errors. Each knows its HTTP status and stable `code`; one handler renders RFC 9457.

ServiceError
├── InvalidRequest            422 invalid_request
│   ├── InvalidEmail          422 invalid_email
│   └── IdempotencyKeyReused  422 idempotency_key_reused
├── DisposableEmail           400 disposable_email
├── EmailTypo                 400 email_typo (+ suggestion)
├── UndeliverableEmail        400 undeliverable_email
├── CaptchaFailed             400 captcha_failed
├── CaptchaRequired           400 captcha_required
├── VerifyFailed              400 (base of the verify outcomes)
│   ├── InvalidCode           400 invalid_code (+ attempts_remaining)
│   ├── MaxAttemptsReached    400 max_attempts_reached
│   └── CodeExpired           400 code_expired
├── WebhookRejected           400 webhook_rejected (+ reason)
├── InvalidToken              400 invalid_token
├── Unauthorized              401 unauthorized
├── NotFound                  404 not_found
├── TooManyRequests           429 (always Retry-After)
│   ├── RateLimited           429 rate_limited
│   ├── Cooldown              429 cooldown
│   ├── DailyLimit            429 daily_limit
│   └── DomainLimit           429 domain_limit
└── ServiceUnavailable        503 (always Retry-After)
    ├── GlobalLimit           503 global_limit
    ├── SendingPaused         503 sending_paused
    └── Unavailable           503 unavailable
"""

import math
from typing import Any, ClassVar

PROBLEM_TYPE_BASE = "https://otp-service.dev/problems/"


class ServiceError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"

    replayed: bool = False
    """The answer an earlier request with the same Idempotency-Key got (Idempotent-Replayed)."""

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        self.detail = detail or self.title
        self.extra = extra
        super().__init__(self.detail)

    def headers(self) -> dict[str, str]:
        return {}

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class InvalidRequest(ServiceError):
    status = 422
    code = "invalid_request"
    title = "The request body is not valid"


class InvalidEmail(InvalidRequest):
    code = "invalid_email"
    title = "The email address is not valid"


class IdempotencyKeyReused(InvalidRequest):
    code = "idempotency_key_reused"
    title = "This Idempotency-Key was used in the last 10 minutes with a different request body"


class DisposableEmail(ServiceError):
    status = 400
    code = "disposable_email"
    title = "Disposable email addresses are not accepted"


class EmailTypo(ServiceError):
    status = 400
    code = "email_typo"
    title = "The email domain looks like a typo"

    def __init__(self, suggestion: str) -> None:
        super().__init__(f"Did you mean {suggestion}?", suggestion=suggestion)


class UndeliverableEmail(ServiceError):
    status = 400
    code = "undeliverable_email"
    title = "The email domain cannot receive email"


class CaptchaFailed(ServiceError):
    status = 400
    code = "captcha_failed"
    title = "The captcha was missing or not accepted"


class CaptchaRequired(ServiceError):
    status = 400
    code = "captcha_required"
    title = "Show the captcha and send again with its token"


class VerifyFailed(ServiceError):
    status = 400


class InvalidCode(VerifyFailed):
    code = "invalid_code"
    title = "The code is not correct"

    def __init__(self, attempts_remaining: int) -> None:
        super().__init__(attempts_remaining=attempts_remaining)


class MaxAttemptsReached(VerifyFailed):
    code = "max_attempts_reached"
    title = "Too many wrong codes; request a new one"


class CodeExpired(VerifyFailed):
    code = "code_expired"
    title = "No valid code for this address; request a new one"


class WebhookRejected(ServiceError):
    status = 400
    code = "webhook_rejected"
    title = "The webhook could not be verified"

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(detail or reason.replace("_", " "), reason=reason)
        self.reason = reason


class InvalidToken(ServiceError):
    status = 400
    code = "invalid_token"
    title = "This link is not valid: it was altered, has expired, or was used already"


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"
    title = "A valid bearer key is required"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class NotFound(ServiceError):
    status = 404
    code = "not_found"
    title = "Not found"


class _RetryLater(ServiceError):
    """A refusal that will pass with time: the client is told when (whole seconds, >= 1)."""

    default_retry_after: ClassVar[float] = 1

    def __init__(self, detail: str | None = None, *, retry_after: float | None = None) -> None:
        seconds = self.default_retry_after if retry_after is None else retry_after
        self.retry_after = max(1, math.ceil(seconds))
        super().__init__(detail, retry_after=self.retry_after)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class TooManyRequests(_RetryLater):
    status = 429
    code = "rate_limited"
    title = "Too many requests"


class RateLimited(TooManyRequests):
    code = "rate_limited"
    title = "Too many requests from this client"


class Cooldown(TooManyRequests):
    code = "cooldown"
    title = "A code was sent to this address moments ago"


class DailyLimit(TooManyRequests):
    code = "daily_limit"
    title = "This address has received its daily number of codes"


class DomainLimit(TooManyRequests):
    code = "domain_limit"
    title = "This address's domain has received its daily number of codes"


class ServiceUnavailable(_RetryLater):
    status = 503
    code = "unavailable"
    title = "Service unavailable"


class GlobalLimit(ServiceUnavailable):
    code = "global_limit"
    title = "The service has reached its daily sending limit"


class SendingPaused(ServiceUnavailable):
    code = "sending_paused"
    title = "Sending is paused to protect the sender's reputation"


class Unavailable(ServiceUnavailable):
    code = "unavailable"
    title = "A dependency is unavailable"
    default_retry_after = 5

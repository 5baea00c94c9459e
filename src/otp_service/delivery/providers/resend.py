"""Resend over its HTTP API (https://resend.com/docs/api-reference/emails/send-email).

Error mapping (https://resend.com/docs/api-reference/errors):
- 429 `rate_limit_exceeded`: RateLimitedError, honouring `retry-after` (same provider).
- 429 `daily_quota_exceeded` / `monthly_quota_exceeded`, 401, 403, 409 (a concurrent request
  with the same idempotency key), 5xx, network errors: RetryableError (fail over).
- 400 / 422: PermanentError (the message itself is refused).
"""

import httpx

from otp_service.delivery.providers.base import (
    OutgoingEmail,
    PermanentError,
    RateLimitedError,
    RetryableError,
)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class ResendProvider:
    name = "resend"

    def __init__(self, http: httpx.AsyncClient, *, api_url: str, api_key: str, timeout: float) -> None:
        self._http = http
        self._url = api_url.rstrip("/") + "/emails"
        self._key = api_key
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 5.0))

    async def send(self, email: OutgoingEmail) -> str:
        payload = {
            "from": email.sender,
            "to": [email.to],
            "subject": email.subject,
            "text": email.text,
            "html": email.html,
            **({"headers": dict(email.headers)} if email.headers else {}),
        }
        headers = {
            "Authorization": f"Bearer {self._key}",
            # Resend keeps the key 24 h: a retry of this job is answered, not sent again.
            "Idempotency-Key": email.idempotency_key,
        }
        try:
            response = await self._http.post(self._url, json=payload, headers=headers, timeout=self._timeout)
        except httpx.TimeoutException:
            raise RetryableError(self.name, "timeout") from None
        except httpx.HTTPError as exc:
            raise RetryableError(self.name, f"network error: {type(exc).__name__}") from None
        status = response.status_code
        if 200 <= status < 300:
            try:
                message_id = response.json()["id"]
            except (ValueError, KeyError, TypeError):
                raise RetryableError(self.name, "malformed success response") from None
            if not isinstance(message_id, str) or not message_id:
                raise RetryableError(self.name, "malformed success response")
            return message_id
        try:
            body = response.json()
            name = str(body.get("name", "")) if isinstance(body, dict) else ""
        except ValueError:
            name = ""
        reason = f"{status} {name}".strip()
        if status == 429 and name not in ("daily_quota_exceeded", "monthly_quota_exceeded"):
            raise RateLimitedError(self.name, reason, retry_after=_retry_after(response))
        if status in (400, 422):
            raise PermanentError(self.name, reason)
        raise RetryableError(self.name, reason, retry_after=_retry_after(response))

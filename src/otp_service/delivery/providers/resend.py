"""Resend over its HTTP API (https://resend.com/docs/api-reference/emails/send-email).

Error mapping (https://resend.com/docs/api-reference/errors):
- 429 `rate_limit_exceeded`: RateLimitedError, honouring `retry-after` (same provider).
- 429 `daily_quota_exceeded` / `monthly_quota_exceeded`, 401, 403, 409 (a concurrent request
  with the same idempotency key), 5xx, network errors: RetryableError (fail over).
- 400 / 422: PermanentError (the message itself is refused).
"""

from collections.abc import Sequence
from typing import Any

import httpx

from otp_service.delivery.providers.base import (
    OutgoingEmail,
    PermanentError,
    RateLimitedError,
    RetryableError,
)
from otp_service.sender.identity import AMAZON_SES_SPF, DnsRecord, IdentityUnavailable, SenderIdentity


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

    async def sender_identity(self, candidates: Sequence[str]) -> SenderIdentity:
        """The sender check's question (CONTRACT §9): GET /domains, then GET /domains/{id} for the
        first of `candidates` listed, whose records are the DKIM key Resend signs with and the SPF
        and MX of its envelope domain (`send.<domain>`). Resend sends through Amazon SES."""
        listed = {d.get("name"): d for d in (await self._get_json("/domains")).get("data") or []}
        name = next((c for c in candidates if c in listed), None)
        if name is None:
            return SenderIdentity(
                provider=self.name, domain=None, verified=False, dkim=(), envelope=None, spf=AMAZON_SES_SPF
            )
        domain = await self._get_json(f"/domains/{listed[name].get('id')}")
        records, dkim, envelope = [], [], None
        for r in domain.get("records") or []:
            host = str(r.get("name") or "@")
            fqdn = (
                name
                if host == "@"
                else host
                if host == name or host.endswith("." + name)
                else f"{host}.{name}"
            )
            value = (
                f"{r.get('priority', 10)} {r.get('value')}" if r.get("type") == "MX" else str(r.get("value"))
            )
            record = DnsRecord(name=fqdn, type=str(r.get("type")), value=value)
            records.append(record)
            if r.get("record") == "DKIM":
                dkim.append(record)
            elif r.get("record") == "SPF" and record.type == "TXT":
                envelope = fqdn
        return SenderIdentity(
            provider=self.name, domain=name, verified=domain.get("status") == "verified", dkim=tuple(dkim),
            envelope=envelope, spf=AMAZON_SES_SPF, records=tuple(records),
        )  # fmt: skip

    async def _get_json(self, path: str) -> dict[str, Any]:
        url = self._url.removesuffix("/emails") + path
        try:
            response = await self._http.get(
                url, headers={"Authorization": f"Bearer {self._key}"}, timeout=self._timeout
            )
        except httpx.HTTPError as exc:
            raise IdentityUnavailable(f"resend: GET {path}: {type(exc).__name__}") from None
        if response.status_code != 200:
            hint = (
                " (a sending-only API key cannot read domains)" if response.status_code in (401, 403) else ""
            )
            raise IdentityUnavailable(f"resend: GET {path} answered {response.status_code}{hint}")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise IdentityUnavailable(f"resend: GET {path}: malformed answer")
        return body

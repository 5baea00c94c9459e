"""The provider protocol and its error tree.

ProviderError
├── RetryableError        try again later; the job may fail over to the fallback provider
│   └── RateLimitedError  the provider asked us to slow down: wait `retry_after`, same provider
└── PermanentError        the message itself is refused: no retry, no failover
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from otp_service.logs import mask_email


@dataclass(frozen=True, slots=True, kw_only=True)
class OutgoingEmail:
    to: str
    sender: str
    subject: str
    text: str
    html: str
    # Stable per job: a retry of the same job never sends twice where the provider supports it.
    idempotency_key: str
    headers: Mapping[str, str] = field(default_factory=dict)


_ADDRESS = re.compile(r"[^\s<>()\[\]\"',;:]+@[^\s<>()\[\]\"',;:]+")
"""An address inside a provider's free text (an SMTP server echoes the recipient: `550 5.1.1
<bob@example.com>: Recipient address rejected`)."""


class ProviderError(Exception):
    """`reason` is logged, so any address a provider's answer holds is masked here, once for
    every provider."""

    def __init__(self, provider: str, reason: str, *, retry_after: float | None = None) -> None:
        reason = _ADDRESS.sub(lambda m: mask_email(m.group(0)), reason)
        super().__init__(f"{provider}: {reason}")
        self.provider = provider
        self.reason = reason
        self.retry_after = retry_after


class RetryableError(ProviderError):
    pass


class RateLimitedError(RetryableError):
    pass


class PermanentError(ProviderError):
    pass


class EmailProvider(Protocol):
    name: str

    async def send(self, email: OutgoingEmail) -> str:
        """Send one email; returns the provider's message id."""
        ...

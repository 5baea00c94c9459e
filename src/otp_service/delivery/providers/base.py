"""The provider protocol and its error tree.

ProviderError
├── RetryableError        try again later; the job may fail over to the fallback provider
│   └── RateLimitedError  the provider asked us to slow down: wait `retry_after`, same provider
└── PermanentError        the message itself is refused: no retry, no failover
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


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


class ProviderError(Exception):
    def __init__(self, provider: str, reason: str, *, retry_after: float | None = None) -> None:
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

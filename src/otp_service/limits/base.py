"""The limit store interface: one atomic decision per send and per verify.

Two implementations pass one contract test suite: `RedisLimitStore` (production, Lua) and
`MemoryLimitStore` (the embedded default, one process).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from otp_service.settings import Rate

DAY_MS = 86_400_000

Clock = Callable[[], float]
"""Seconds since the epoch; injectable so 24-hour windows are tested without sleeping."""


def system_clock() -> float:
    return time.time()


class SendStatus(StrEnum):
    OK = "ok"
    RATE_LIMITED = "rate_limited"
    COOLDOWN = "cooldown"
    DAILY_LIMIT = "daily_limit"
    GLOBAL_LIMIT = "global_limit"
    PAUSED = "sending_paused"


class VerifyStatus(StrEnum):
    APPROVED = "approved"
    INVALID = "invalid"
    MAX_ATTEMPTS = "max_attempts"
    EXPIRED = "expired"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True, slots=True, kw_only=True)
class SendRequest:
    client_ip: str
    address_id: str
    channel: str
    ip_rate: Rate
    cooldown_ms: int
    daily_limit: int
    global_limit: int
    code_hash: str
    code_ttl_ms: int
    job_payload: bytes


@dataclass(frozen=True, slots=True)
class SendDecision:
    status: SendStatus
    retry_after_ms: int = 0
    job_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyRequest:
    client_ip: str
    address_id: str
    ip_rate: Rate
    code_hash: str
    max_attempts: int


@dataclass(frozen=True, slots=True)
class VerifyDecision:
    status: VerifyStatus
    retry_after_ms: int = 0
    attempts_remaining: int = 0


class LimitStore(Protocol):
    async def decide_send(self, req: SendRequest) -> SendDecision:
        """IP throttle, cooldown, daily and global caps; on acceptance store the code hash and
        enqueue the job. All or nothing."""
        ...

    async def throttle(self, scope: str, client_ip: str, rate: Rate) -> int:
        """Count one request against the IP rate: 0 when admitted, else ms to wait."""
        ...

    async def verify(self, req: VerifyRequest) -> VerifyDecision: ...

    async def global_usage(self, channel: str) -> int:
        """Accepted sends in the rolling 24 h."""
        ...

    # The reputation guard's shared state.
    async def pauses(self) -> dict[str, str]:
        """Paused providers and why."""
        ...

    async def pause(self, provider: str, reason: str) -> None: ...

    async def resume(self, provider: str, now_ms: int) -> bool:
        """False when the provider was not paused."""
        ...

    async def resumed_at(self, provider: str) -> int | None: ...

    async def set_sending_paused(self, paused: bool) -> None: ...

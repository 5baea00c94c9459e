"""The embedded default's limit store: the Lua scripts' semantics, in one process.

Every method runs without awaiting in between, so on one event loop each decision is atomic
exactly as a Lua script is in Redis. The shared contract tests hold both to the same cases.
"""

import collections
import hmac
from dataclasses import dataclass

from otp_service.delivery.queue import MemoryJobQueue
from otp_service.limits.base import (
    DAY_MS,
    Clock,
    SendDecision,
    SendRequest,
    SendStatus,
    VerifyDecision,
    VerifyRequest,
    VerifyStatus,
    system_clock,
)
from otp_service.settings import Rate

_SWEEP_EVERY = 1024  # operations between sweeps of expired entries


@dataclass(slots=True)
class _Code:
    hash: str
    wrong: int
    expires_at: int


class _Windows:
    """Sliding logs keyed by name (the sorted sets of the Redis store)."""

    def __init__(self) -> None:
        self._logs: dict[str, collections.deque[int]] = {}

    def state(self, key: str, now: int, window: int) -> tuple[int, int]:
        log = self._logs.get(key)
        if log is None:
            return 0, now
        while log and log[0] <= now - window:
            log.popleft()
        return len(log), (log[0] if log else now)

    def add(self, key: str, now: int) -> None:
        self._logs.setdefault(key, collections.deque()).append(now)

    def sweep(self, now: int, window: int) -> None:
        for key in [k for k, log in self._logs.items() if not log or log[-1] <= now - window]:
            del self._logs[key]


class MemoryLimitStore:
    def __init__(self, queue: MemoryJobQueue, *, clock: Clock = system_clock) -> None:
        self._queue = queue
        self._clock = clock
        self._throttles: dict[int, _Windows] = collections.defaultdict(_Windows)
        self._daily = _Windows()
        self._global = _Windows()
        self._cooldowns: dict[str, int] = {}
        self._codes: dict[str, _Code] = {}
        self._ops = 0
        self._pauses: dict[str, str] = {}
        self._resumed: dict[str, int] = {}
        self._sending_paused = False

    def _now(self) -> int:
        now = int(self._clock() * 1000)
        self._ops += 1
        if self._ops % _SWEEP_EVERY == 0:
            self._sweep(now)
        return now

    def _sweep(self, now: int) -> None:
        for period, windows in self._throttles.items():
            windows.sweep(now, period)
        self._daily.sweep(now, DAY_MS)
        self._cooldowns = {k: v for k, v in self._cooldowns.items() if v > now}
        self._codes = {k: v for k, v in self._codes.items() if v.expires_at > now}

    def _throttle(self, key: str, now: int, rate: Rate) -> int:
        window = rate.period_seconds * 1000
        windows = self._throttles[window]
        count, oldest = windows.state(key, now, window)
        if count >= rate.limit:
            return max(1, oldest + window - now)
        windows.add(key, now)
        return 0

    async def decide_send(self, req: SendRequest) -> SendDecision:
        now = self._now()
        wait = self._throttle(f"otp_send:{req.client_ip}", now, req.ip_rate)
        if wait:
            return SendDecision(SendStatus.RATE_LIMITED, wait)
        if self._sending_paused:
            return SendDecision(SendStatus.PAUSED, 300_000)
        cooldown_until = self._cooldowns.get(req.address_id, 0)
        if cooldown_until > now:
            return SendDecision(SendStatus.COOLDOWN, cooldown_until - now)
        daily, daily_oldest = self._daily.state(req.address_id, now, DAY_MS)
        if daily >= req.daily_limit:
            return SendDecision(SendStatus.DAILY_LIMIT, max(1, daily_oldest + DAY_MS - now))
        sent, oldest = self._global.state(req.channel, now, DAY_MS)
        if sent >= req.global_limit:
            return SendDecision(SendStatus.GLOBAL_LIMIT, max(1, oldest + DAY_MS - now))
        if req.cooldown_ms > 0:
            self._cooldowns[req.address_id] = now + req.cooldown_ms
        self._daily.add(req.address_id, now)
        self._global.add(req.channel, now)
        self._codes[req.address_id] = _Code(req.code_hash, 0, now + req.code_ttl_ms)
        job_id = self._queue.enqueue(req.job_payload, now + req.code_ttl_ms)
        return SendDecision(SendStatus.OK, job_id=job_id)

    async def throttle(self, scope: str, client_ip: str, rate: Rate) -> int:
        return self._throttle(f"{scope}:{client_ip}", self._now(), rate)

    async def verify(self, req: VerifyRequest) -> VerifyDecision:
        now = self._now()
        wait = self._throttle(f"otp_verify:{req.client_ip}", now, req.ip_rate)
        if wait:
            return VerifyDecision(VerifyStatus.RATE_LIMITED, retry_after_ms=wait)
        code = self._codes.get(req.address_id)
        if code is None or code.expires_at <= now:
            self._codes.pop(req.address_id, None)
            return VerifyDecision(VerifyStatus.EXPIRED)
        if hmac.compare_digest(code.hash, req.code_hash):
            del self._codes[req.address_id]
            return VerifyDecision(VerifyStatus.APPROVED)
        code.wrong += 1
        if code.wrong >= req.max_attempts:
            del self._codes[req.address_id]
            return VerifyDecision(VerifyStatus.MAX_ATTEMPTS)
        return VerifyDecision(VerifyStatus.INVALID, attempts_remaining=req.max_attempts - code.wrong)

    async def global_usage(self, channel: str) -> int:
        return self._global.state(channel, self._now(), DAY_MS)[0]

    async def pauses(self) -> dict[str, str]:
        return dict(self._pauses)

    async def pause(self, provider: str, reason: str) -> None:
        self._pauses[provider] = reason

    async def resume(self, provider: str, now_ms: int) -> bool:
        self._resumed[provider] = now_ms
        self._sending_paused = False
        return self._pauses.pop(provider, None) is not None

    async def resumed_at(self, provider: str) -> int | None:
        return self._resumed.get(provider)

    async def set_sending_paused(self, paused: bool) -> None:
        self._sending_paused = paused

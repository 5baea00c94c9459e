"""Per-client request rates: a sliding log per client and scope, in Redis (Lua) or in process.

The same sliding log is part of the send and verify decisions (otp/lua), which call the
prelude's `throttle` on the same key; `Throttle` alone counts the requests that are refused
before any decision (an address that fails validation).
"""

import collections
import itertools
import os
from typing import Protocol

from otp_service.clock import Clock, now_ms
from otp_service.redisio import PipelinedRedis, RedisKeys, Script, redis_guard
from otp_service.settings import Rate

PRELUDE = ("otp_service.limits", "_prelude")
"""The Lua helpers every script that throttles starts with."""


class Throttle(Protocol):
    async def hit(self, scope: str, client: str, rate: Rate) -> int:
        """Count one request against the rate: 0 when admitted, else ms to wait."""
        ...


class Members:
    """Sorted-set members, unique across processes and hosts: a random per-process prefix and a
    counter (os.urandom per request would be a syscall on the request path)."""

    def __init__(self) -> None:
        self._nonce = os.urandom(6).hex()
        self._seq = itertools.count()

    def __call__(self) -> str:
        return f"{self._nonce}{next(self._seq)}"


def throttle_args(clock: Clock, rate: Rate, member: str) -> list[str | int]:
    """ARGV[1..4] of every throttling script: now (ms), limit, window (ms), unique member."""
    return [now_ms(clock), rate.limit, rate.period_seconds * 1000, member]


class RedisThrottle:
    _SCRIPT = Script(PRELUDE, ("otp_service.limits", "throttle"))

    def __init__(self, redis: PipelinedRedis, keys: RedisKeys, *, clock: Clock) -> None:
        self._redis = redis
        self._keys = keys
        self._clock = clock
        self._member = Members()

    async def hit(self, scope: str, client: str, rate: Rate) -> int:
        keys = [self._keys.throttle(scope, client)]
        async with redis_guard("throttle"):
            wait = await self._SCRIPT(self._redis, keys, throttle_args(self._clock, rate, self._member()))
        return int(wait)


class SlidingWindows:
    """Sliding logs keyed by name: the in-process twin of the scripts' sorted sets."""

    def __init__(self) -> None:
        self._logs: dict[str, collections.deque[int]] = {}

    def state(self, key: str, now: int, window: int) -> tuple[int, int]:
        """(hits inside the window, time of the oldest)."""
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


_SWEEP_EVERY = 1024  # hits between sweeps of expired logs


class MemoryThrottle:
    """The embedded default's throttle. Synchronous inside: on one event loop each hit is atomic,
    as a script is in Redis; the in-process code store counts its hits here too."""

    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._windows: dict[int, SlidingWindows] = collections.defaultdict(SlidingWindows)
        self._hits = 0

    def hit_now(self, scope: str, client: str, rate: Rate, now: int) -> int:
        window = rate.period_seconds * 1000
        windows = self._windows[window]
        self._hits += 1
        if self._hits % _SWEEP_EVERY == 0:
            for period, w in self._windows.items():
                w.sweep(now, period)
        key = f"{scope}:{client}"
        count, oldest = windows.state(key, now, window)
        if count >= rate.limit:
            return max(1, oldest + window - now)
        windows.add(key, now)
        return 0

    async def hit(self, scope: str, client: str, rate: Rate) -> int:
        return self.hit_now(scope, client, rate, now_ms(self._clock))

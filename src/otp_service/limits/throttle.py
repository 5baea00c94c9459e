"""Per-client and per-subnet request rates (CONTRACT §2a): sliding logs per client, subnet and
scope, in Redis (Lua) or in process.

The same logs are part of the send and verify decisions (otp/lua), which call the prelude's
`pair_wait`/`pair_add` on the same keys; `Throttle` alone counts the requests that are refused
before any decision (a malformed body, a refused address, a failed captcha).
"""

import bisect
import collections
import itertools
import os
from dataclasses import dataclass
from typing import Protocol

from otp_service.clock import Clock, now_ms
from otp_service.net import Client
from otp_service.redisio import PipelinedRedis, RedisKeys, Script, redis_guard
from otp_service.settings import Rate, Settings

PRELUDE = ("otp_service.limits", "_prelude")
"""The Lua helpers every script that throttles starts with."""


@dataclass(frozen=True, slots=True)
class Rates:
    """One scope's limits: per client, per subnet, and how long the subnet's log is kept (at
    least its window; longer when the low-conversion guard reads it over a longer one)."""

    scope: str
    client: Rate
    subnet: Rate
    keep_ms: int

    @classmethod
    def of(cls, settings: Settings, scope: str, *, keep_s: int = 0) -> "Rates":
        client, subnet = settings.rate(scope), settings.rate(f"{scope}_subnet")
        return cls(scope, client, subnet, max(subnet.period_seconds, keep_s) * 1000)

    def keys(self, keys: RedisKeys, client: Client) -> list[str]:
        return [keys.throttle(self.scope, client.key), keys.throttle(f"{self.scope}_subnet", client.subnet)]


@dataclass(frozen=True, slots=True)
class ConversionGuard:
    """The low-conversion guard (CONTRACT §2a): a subnet with at least `min_sends` accepted sends
    in 24 h and verified/sent below `min_ratio` is limited to `rate`, counting every request in
    its subnet log within the rate's window."""

    min_sends: int
    min_ratio: float
    rate: Rate

    @classmethod
    def of(cls, settings: Settings) -> "ConversionGuard":
        rate = Rate.parse(settings.conversion_guard_rate)
        return cls(settings.conversion_min_sends, settings.conversion_min_ratio, rate)

    def args(self) -> list[str | int | float]:
        return [self.min_sends, self.min_ratio, self.rate.limit, self.rate.period_seconds * 1000]

    def slows(self, sent: int, verified: int) -> bool:
        return sent >= self.min_sends and verified < self.min_ratio * sent


class Throttle(Protocol):
    async def hit(self, rates: Rates, client: Client) -> int:
        """Count one request against the client's and its subnet's rates: 0 when admitted,
        else ms to wait."""
        ...


class Members:
    """Sorted-set members, unique across processes and hosts: a random per-process prefix and a
    counter (os.urandom per request would be a syscall on the request path)."""

    def __init__(self) -> None:
        self._nonce = os.urandom(6).hex()
        self._seq = itertools.count()

    def __call__(self) -> str:
        return f"{self._nonce}{next(self._seq)}"


def throttle_args(clock: Clock, rates: Rates, member: str) -> list[str | int]:
    """ARGV[1..7] of every throttling script (limits/lua/_prelude.lua)."""
    return [
        now_ms(clock),
        member,
        rates.client.limit,
        rates.client.period_seconds * 1000,
        rates.subnet.limit,
        rates.subnet.period_seconds * 1000,
        rates.keep_ms,
    ]


class RedisThrottle:
    _SCRIPT = Script(PRELUDE, ("otp_service.limits", "throttle"))

    def __init__(self, redis: PipelinedRedis, keys: RedisKeys, *, clock: Clock) -> None:
        self._redis = redis
        self._keys = keys
        self._clock = clock
        self._member = Members()

    async def hit(self, rates: Rates, client: Client) -> int:
        args = throttle_args(self._clock, rates, self._member())
        async with redis_guard("throttle"):
            wait = await self._SCRIPT(self._redis, rates.keys(self._keys, client), args)
        return int(wait)


class SlidingWindows:
    """Sliding logs keyed by name: the in-process twin of the scripts' sorted sets."""

    def __init__(self) -> None:
        self._logs: dict[str, collections.deque[int]] = {}

    def state(self, key: str, now: int, window: int) -> tuple[int, int]:
        """(hits inside the window, time of the oldest), older hits dropped."""
        log = self._logs.get(key)
        if log is None:
            return 0, now
        while log and log[0] <= now - window:
            log.popleft()
        return len(log), (log[0] if log else now)

    def count(self, key: str, now: int, window: int) -> int:
        """Hits inside the window of a log kept longer than it (nothing dropped)."""
        log = self._logs.get(key)
        return 0 if log is None else len(log) - bisect.bisect_right(log, now - window)

    def wait(self, key: str, now: int, window: int, limit: int) -> int:
        """ms until the hits in the window fall below `limit` (at least 1); asked when refusing."""
        log = self._logs[key]
        first = bisect.bisect_right(log, now - window)
        nth = log[first + self.count(key, now, window) - limit]
        return max(1, nth + window - now)

    def add(self, key: str, now: int) -> None:
        log = self._logs.setdefault(key, collections.deque())
        if log and log[-1] > now:  # a clock step back: keep the log sorted
            bisect.insort(log, now)
        else:
            log.append(now)

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

    def _sweep(self, now: int) -> None:
        self._hits += 1
        if self._hits % _SWEEP_EVERY == 0:
            for period, w in self._windows.items():
                w.sweep(now, period)

    def pair_wait(self, rates: Rates, client: Client, now: int) -> int:
        """The prelude's pair_wait: 0 when both rates admit, else ms; records nothing."""
        self._sweep(now)
        wait = 0
        window = rates.client.period_seconds * 1000
        count, oldest = self._windows[window].state(f"{rates.scope}:{client.key}", now, window)
        if count >= rates.client.limit:
            wait = max(1, oldest + window - now)
        logs, key = self.subnet_log(rates, client)
        logs.state(key, now, rates.keep_ms)
        window = rates.subnet.period_seconds * 1000
        if logs.count(key, now, window) >= rates.subnet.limit:
            wait = max(wait, logs.wait(key, now, window, rates.subnet.limit))
        return wait

    def subnet_log(self, rates: Rates, client: Client) -> tuple[SlidingWindows, str]:
        """Where the client's subnet's hits are kept (for `rates.keep_ms`), and under which key."""
        return self._windows[rates.keep_ms], f"{rates.scope}_subnet:{client.subnet}"

    def pair_add(self, rates: Rates, client: Client, now: int) -> None:
        self._windows[rates.client.period_seconds * 1000].add(f"{rates.scope}:{client.key}", now)
        logs, key = self.subnet_log(rates, client)
        logs.add(key, now)

    def hit_now(self, rates: Rates, client: Client, now: int) -> int:
        wait = self.pair_wait(rates, client, now)
        if wait == 0:
            self.pair_add(rates, client, now)
        return wait

    async def hit(self, rates: Rates, client: Client) -> int:
        return self.hit_now(rates, client, now_ms(self._clock))

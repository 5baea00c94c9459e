"""Per-client and per-subnet request rates (CONTRACT §2a): sliding logs per client, subnet and
scope, in Redis (Lua) or in process.

The same logs are part of the send and verify decisions (otp/lua), which call the prelude's
`pair_wait`/`pair_add` on the same keys; `Throttle` alone counts the requests that are refused
before any decision (a malformed body, a refused address, a failed captcha).
"""

import itertools
import os
from dataclasses import dataclass
from typing import Protocol

from otp_service.clock import Clock, now_ms
from otp_service.net import Client
from otp_service.redisio import RedisClient, RedisKeys, Script, redis_guard
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
    its subnet log within the rate's window. The rule itself is otp/lua/_decide.lua's."""

    min_sends: int
    min_ratio: float
    rate: Rate

    @classmethod
    def of(cls, settings: Settings) -> "ConversionGuard":
        rate = Rate.parse(settings.conversion_guard_rate)
        return cls(settings.conversion_min_sends, settings.conversion_min_ratio, rate)


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

    def __init__(self, redis: RedisClient, keys: RedisKeys, *, clock: Clock) -> None:
        self._redis = redis
        self._keys = keys
        self._clock = clock
        self._member = Members()

    async def hit(self, rates: Rates, client: Client) -> int:
        args = throttle_args(self._clock, rates, self._member())
        async with redis_guard("throttle"):
            wait = await self._SCRIPT(self._redis, rates.keys(self._keys, client), args)
        return int(wait)

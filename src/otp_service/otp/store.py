"""The code state machine: one atomic decision per send and per verify.

Two implementations pass one contract test suite (tests/test_store_contract.py):
`RedisCodeStore` (production: one Lua script per decision, otp/lua) and `MemoryCodeStore` (the
embedded default, one process). A send decides the client's rate, the sending-paused flag, the
address's cooldown and rolling-24 h cap and the service-wide rolling-24 h cap; on acceptance it
stores the code's hash and queues the sealed delivery job, all or nothing.
"""

import hmac
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from otp_service.clock import DAY_MS, Clock, now_ms
from otp_service.delivery.queue import MemoryJobQueue
from otp_service.delivery.reputation import PAUSE_RETRY_MS, MemoryPauseState
from otp_service.limits.throttle import (
    PRELUDE,
    ConversionGuard,
    Members,
    MemoryThrottle,
    Rates,
    SlidingWindows,
    throttle_args,
)
from otp_service.net import Client
from otp_service.redisio import PipelinedRedis, RedisKeys, Script, redis_guard, text

SEND_SCOPE = "otp_send"
VERIFY_SCOPE = "otp_verify"


class SendStatus(StrEnum):
    OK = "ok"
    RATE_LIMITED = "rate_limited"
    COOLDOWN = "cooldown"
    DAILY_LIMIT = "daily_limit"
    GLOBAL_LIMIT = "global_limit"
    PAUSED = "sending_paused"
    KEY_REUSED = "idempotency_key_reused"


KEPT_ANSWERS = frozenset({SendStatus.OK, SendStatus.COOLDOWN, SendStatus.DAILY_LIMIT})
"""The answers an Idempotency-Key keeps and replays: the address's and the code's. A refusal for
the client's rate or a 503 is not kept, so a retry is decided afresh."""


class ClaimStatus(StrEnum):
    NEW = "new"  # claimed: go on to the send decision
    PENDING = "pending"  # another request with this key is being answered
    REUSED = "reused"  # the key came with a different body
    REPLAY = "replay"  # the first answer, to repeat
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A send's Idempotency-Key: the key's id (a keyed hash of it), the body's fingerprint, how
    long the answer is kept and how long a claim waits for one."""

    key_id: str
    fingerprint: str
    keep_ms: int
    lease_ms: int


class VerifyStatus(StrEnum):
    APPROVED = "approved"
    INVALID = "invalid"
    MAX_ATTEMPTS = "max_attempts"
    EXPIRED = "expired"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True, slots=True, kw_only=True)
class SendRequest:
    client: Client
    address_id: str
    channel: str
    rates: Rates
    guard: ConversionGuard
    cooldown_ms: int
    daily_limit: int
    global_limit: int
    code_hash: str
    code_ttl_ms: int
    job_payload: bytes
    # OTP_RESEND_STRATEGY=reuse: the new code sealed (kept beside its hash, so that a later send
    # can email it again), and the least time a live code must have left to be re-sent.
    sealed_code: bytes | None = None
    reuse_min_left_ms: int = 0
    idempotency: Idempotency | None = None


@dataclass(frozen=True, slots=True)
class SendDecision:
    status: SendStatus
    retry_after_ms: int = 0
    job_id: str | None = None
    slowed: bool = False
    """The low-conversion guard refused the subnet for the first time in its window."""
    replayed: bool = False
    """The answer of an earlier request with the same Idempotency-Key."""


@dataclass(frozen=True, slots=True)
class Claim:
    status: ClaimStatus
    decision: SendDecision | None = None  # REPLAY: the first answer; RATE_LIMITED: the wait


def _kept(status: str, value: bytes | str | None) -> SendDecision:
    """A kept answer as a replayed decision."""
    decided = SendStatus(status)
    if decided is SendStatus.OK:
        return SendDecision(decided, job_id=text(value or b""), replayed=True)
    return SendDecision(decided, retry_after_ms=int(value or 0), replayed=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyRequest:
    client: Client
    address_id: str
    rates: Rates
    code_hash: str
    max_attempts: int


@dataclass(frozen=True, slots=True)
class VerifyDecision:
    status: VerifyStatus
    retry_after_ms: int = 0
    attempts_remaining: int = 0


class CodeStore(Protocol):
    async def claim(self, idem: Idempotency, client: Client, rates: Rates) -> Claim:
        """Before anything else, for a send with an Idempotency-Key (idempotency.lua)."""
        ...

    async def claimed(self, idem: Idempotency) -> Claim | None:
        """Polled while PENDING: the answer once there is one (REPLAY, or REUSED), PENDING, or
        None when the claim was given up (claim again)."""
        ...

    async def release(self, idem: Idempotency) -> None:
        """Give up a claim whose request was refused before the send decision."""
        ...

    async def decide_send(self, req: SendRequest) -> SendDecision: ...

    async def verify(self, req: VerifyRequest) -> VerifyDecision: ...

    async def global_usage(self, channel: str) -> int:
        """Accepted sends in the rolling 24 h."""
        ...

    async def is_current(self, address_id: str, code_hash: str) -> bool:
        """Whether this is still the address's live code (the worker's superseded check)."""
        ...


_IDEMPOTENCY = ("otp_service.otp", "_idempotency")
"""The Idempotency-Key record's helpers, shared by the scripts that read or write it."""


def _claim_of(reply: list[Any]) -> Claim | None:
    """A script's {status[, …]} about a key's record as a Claim; None for 'none' (no record)."""
    if reply[0] == b"none":
        return None
    status = ClaimStatus(reply[0].decode())
    if status is ClaimStatus.REPLAY:
        return Claim(status, _kept(reply[1].decode(), reply[2]))
    if status is ClaimStatus.RATE_LIMITED:
        return Claim(status, SendDecision(SendStatus.RATE_LIMITED, retry_after_ms=int(reply[1])))
    return Claim(status)


class RedisCodeStore:
    _SEND = Script(PRELUDE, _IDEMPOTENCY, ("otp_service.otp", "send"))
    _VERIFY = Script(PRELUDE, ("otp_service.otp", "verify"))
    _CLAIM = Script(PRELUDE, _IDEMPOTENCY, ("otp_service.otp", "idempotency"))
    _READ = Script(_IDEMPOTENCY, ("otp_service.otp", "idempotency_read"))
    _RELEASE = Script(_IDEMPOTENCY, ("otp_service.otp", "idempotency_release"))

    def __init__(self, redis: PipelinedRedis, keys: RedisKeys, *, clock: Clock) -> None:
        self._redis = redis
        self._keys = keys
        self._clock = clock
        self._member = Members()

    async def claim(self, idem: Idempotency, client: Client, rates: Rates) -> Claim:
        keys = [*rates.keys(self._keys, client), self._keys.idempotency(idem.key_id)]
        args = [*throttle_args(self._clock, rates, self._member()), idem.fingerprint, idem.lease_ms]
        async with redis_guard("idempotency.claim"):
            reply = await self._CLAIM(self._redis, keys, args)
        claim = _claim_of(reply)
        assert claim is not None
        return claim

    async def claimed(self, idem: Idempotency) -> Claim | None:
        keys = [self._keys.idempotency(idem.key_id)]
        async with redis_guard("idempotency.read"):
            return _claim_of(await self._READ(self._redis, keys, [idem.fingerprint]))

    async def release(self, idem: Idempotency) -> None:
        async with redis_guard("idempotency.release"):
            await self._RELEASE(self._redis, [self._keys.idempotency(idem.key_id)], [idem.fingerprint])

    async def decide_send(self, req: SendRequest) -> SendDecision:
        k = self._keys
        idem = req.idempotency
        keys = [
            *req.rates.keys(k, req.client),
            k.conversion(req.client.subnet),
            k.slowed(req.client.subnet),
            k.sending_paused,
            k.cooldown(req.address_id),
            k.daily(req.address_id),
            k.global_sends(req.channel),
            k.code(req.address_id),
            k.jobs,
            k.idempotency(idem.key_id if idem else "-"),
        ]
        args = [
            *throttle_args(self._clock, req.rates, self._member()),
            *req.guard.args(),
            req.cooldown_ms,
            req.daily_limit,
            req.global_limit,
            req.code_hash,
            req.code_ttl_ms,
            req.job_payload,
            PAUSE_RETRY_MS,
            req.sealed_code or b"",
            req.reuse_min_left_ms,
            idem.fingerprint if idem else b"",
            idem.keep_ms if idem else 0,
        ]
        async with redis_guard("send"):
            status, value, *slowed = await self._SEND(self._redis, keys, args)
        if status == b"replay":
            return _kept(value.decode(), slowed[0])
        decided = SendStatus(status.decode())
        if decided is SendStatus.OK:
            return SendDecision(decided, job_id=value.decode())
        return SendDecision(decided, retry_after_ms=int(value), slowed=slowed == [1])

    async def verify(self, req: VerifyRequest) -> VerifyDecision:
        keys = [
            *req.rates.keys(self._keys, req.client),
            self._keys.code(req.address_id),
            self._keys.conversion(req.client.subnet),
        ]
        args = [*throttle_args(self._clock, req.rates, self._member()), req.code_hash, req.max_attempts]
        async with redis_guard("verify"):
            status, value = await self._VERIFY(self._redis, keys, args)
        decided = VerifyStatus(status.decode())
        if decided is VerifyStatus.RATE_LIMITED:
            return VerifyDecision(decided, retry_after_ms=int(value))
        return VerifyDecision(decided, attempts_remaining=int(value))

    async def global_usage(self, channel: str) -> int:
        async with redis_guard("usage"):
            count = await self._redis.execute(
                "ZCOUNT", self._keys.global_sends(channel), now_ms(self._clock) - DAY_MS + 1, "+inf"
            )
        return int(count)

    async def is_current(self, address_id: str, code_hash: str) -> bool:
        async with redis_guard("code.current"):
            stored = await self._redis.execute("HGET", self._keys.code(address_id), "h")
        return stored is not None and hmac.compare_digest(stored, code_hash.encode())


@dataclass(slots=True)
class _Code:
    hash: str
    wrong: int
    expires_at: int
    sealed: bytes | None = None  # OTP_RESEND_STRATEGY=reuse


@dataclass(slots=True)
class _Kept:
    fingerprint: str
    answer: SendDecision | None  # None while the claim is pending
    expires_at: int


_SWEEP_EVERY = 1024  # decisions between sweeps of expired entries
_HOUR = 3_600_000


class MemoryCodeStore:
    """The Lua scripts' semantics in one process. Every method runs without awaiting in
    between, so on one event loop each decision is atomic exactly as a script is in Redis."""

    def __init__(
        self, *, throttle: MemoryThrottle, queue: MemoryJobQueue, pauses: MemoryPauseState, clock: Clock
    ) -> None:
        self._throttle = throttle
        self._queue = queue
        self._pauses = pauses
        self._clock = clock
        self._daily = SlidingWindows()
        self._global = SlidingWindows()
        self._cooldowns: dict[str, int] = {}
        self._codes: dict[str, _Code] = {}
        self._conversions: dict[str, dict[tuple[str, int], int]] = {}
        self._slowed: dict[str, int] = {}
        self._kept: dict[str, _Kept] = {}
        self._ops = 0

    def _now(self) -> int:
        now = now_ms(self._clock)
        self._ops += 1
        if self._ops % _SWEEP_EVERY == 0:
            self._daily.sweep(now, DAY_MS)
            self._cooldowns = {k: v for k, v in self._cooldowns.items() if v > now}
            self._codes = {k: v for k, v in self._codes.items() if v.expires_at > now}
            self._slowed = {k: v for k, v in self._slowed.items() if v > now}
            self._kept = {k: v for k, v in self._kept.items() if v.expires_at > now}
            for subnet in list(self._conversions):
                self._conversion(subnet, now)
        return now

    def _conversion(self, subnet: str, now: int) -> tuple[int, int]:
        """The prelude's `conversion`: (sends, verified) in the last 24 hourly steps."""
        counts = self._conversions.get(subnet)
        if counts is None:
            return 0, 0
        current = now // _HOUR
        for field in [f for f in counts if f[1] <= current - 24]:
            del counts[field]
        if not counts:
            del self._conversions[subnet]
        sent = sum(n for (kind, _), n in counts.items() if kind == "s")
        return sent, sum(counts.values()) - sent

    def _convert(self, subnet: str, now: int, kind: str) -> None:
        counts = self._conversions.setdefault(subnet, {})
        field = (kind, now // _HOUR)
        counts[field] = counts.get(field, 0) + 1

    def _record(self, key_id: str, now: int) -> _Kept | None:
        kept = self._kept.get(key_id)
        if kept is not None and kept.expires_at <= now:
            del self._kept[key_id]
            return None
        return kept

    async def claim(self, idem: Idempotency, client: Client, rates: Rates) -> Claim:
        now = self._now()
        wait = self._throttle.pair_wait(rates, client, now)
        if wait:
            return Claim(ClaimStatus.RATE_LIMITED, SendDecision(SendStatus.RATE_LIMITED, wait))
        kept = self._record(idem.key_id, now)
        if kept is None:
            self._kept[idem.key_id] = _Kept(idem.fingerprint, None, now + idem.lease_ms)
            return Claim(ClaimStatus.NEW)
        self._throttle.pair_add(rates, client, now)
        return self._state(kept, idem)

    @staticmethod
    def _state(kept: _Kept, idem: Idempotency) -> Claim:
        if kept.fingerprint != idem.fingerprint:
            return Claim(ClaimStatus.REUSED)
        if kept.answer is None:
            return Claim(ClaimStatus.PENDING)
        return Claim(ClaimStatus.REPLAY, kept.answer)

    async def claimed(self, idem: Idempotency) -> Claim | None:
        kept = self._record(idem.key_id, now_ms(self._clock))
        return None if kept is None else self._state(kept, idem)

    async def release(self, idem: Idempotency) -> None:
        kept = self._kept.get(idem.key_id)
        if kept is not None and kept.answer is None and kept.fingerprint == idem.fingerprint:
            del self._kept[idem.key_id]

    def _answer(self, req: SendRequest, decision: SendDecision, now: int) -> SendDecision:
        """send.lua's `answer`: kept under the request's Idempotency-Key, or the claim given up."""
        idem = req.idempotency
        if idem is None or decision.replayed or decision.status is SendStatus.KEY_REUSED:
            return decision
        if decision.status in KEPT_ANSWERS:
            replay = SendDecision(decision.status, decision.retry_after_ms, decision.job_id, replayed=True)
            self._kept[idem.key_id] = _Kept(idem.fingerprint, replay, now + idem.keep_ms)
        else:
            kept = self._kept.get(idem.key_id)
            if kept is not None and kept.answer is None:
                del self._kept[idem.key_id]
        return decision

    async def decide_send(self, req: SendRequest) -> SendDecision:
        now = self._now()
        return self._answer(req, self._decide_send(req, now), now)

    def _decide_send(self, req: SendRequest, now: int) -> SendDecision:
        wait = self._throttle.pair_wait(req.rates, req.client, now)
        if wait:
            return SendDecision(SendStatus.RATE_LIMITED, wait)
        if req.guard.slows(*self._conversion(req.client.subnet, now)):
            logs, key = self._throttle.subnet_log(req.rates, req.client)
            limit, window = req.guard.rate.limit, req.guard.rate.period_seconds * 1000
            if logs.count(key, now, window) >= limit:
                first = self._slowed.get(req.client.subnet, 0) <= now
                if first:
                    self._slowed[req.client.subnet] = now + window
                return SendDecision(SendStatus.RATE_LIMITED, logs.wait(key, now, window, limit), slowed=first)
        self._throttle.pair_add(req.rates, req.client, now)
        if req.idempotency is not None:  # answered meanwhile by a request with the same key
            kept = self._record(req.idempotency.key_id, now)
            if kept is not None and kept.fingerprint != req.idempotency.fingerprint:
                return SendDecision(SendStatus.KEY_REUSED)
            if kept is not None and kept.answer is not None:
                return kept.answer
        if self._pauses.sending_paused:
            return SendDecision(SendStatus.PAUSED, PAUSE_RETRY_MS)
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
        self._convert(req.client.subnet, now, "s")
        if req.sealed_code is not None:
            live = self._live(req.address_id, now)
            if (
                live is not None
                and live.sealed is not None
                and live.expires_at - now >= req.reuse_min_left_ms
            ):
                left = live.expires_at - now
                job_id = self._queue.enqueue(req.job_payload, now + left, live.sealed, left // 1000)
                return SendDecision(SendStatus.OK, job_id=job_id)
        self._codes[req.address_id] = _Code(req.code_hash, 0, now + req.code_ttl_ms, req.sealed_code)
        job_id = self._queue.enqueue(req.job_payload, now + req.code_ttl_ms)
        return SendDecision(SendStatus.OK, job_id=job_id)

    async def verify(self, req: VerifyRequest) -> VerifyDecision:
        now = self._now()
        wait = self._throttle.hit_now(req.rates, req.client, now)
        if wait:
            return VerifyDecision(VerifyStatus.RATE_LIMITED, retry_after_ms=wait)
        code = self._live(req.address_id, now)
        if code is None:
            return VerifyDecision(VerifyStatus.EXPIRED)
        if hmac.compare_digest(code.hash, req.code_hash):
            del self._codes[req.address_id]
            self._convert(req.client.subnet, now, "v")
            return VerifyDecision(VerifyStatus.APPROVED)
        code.wrong += 1
        if code.wrong >= req.max_attempts:
            del self._codes[req.address_id]
            return VerifyDecision(VerifyStatus.MAX_ATTEMPTS)
        return VerifyDecision(VerifyStatus.INVALID, attempts_remaining=req.max_attempts - code.wrong)

    def _live(self, address_id: str, now: int) -> _Code | None:
        code = self._codes.get(address_id)
        if code is None or code.expires_at <= now:
            self._codes.pop(address_id, None)
            return None
        return code

    async def global_usage(self, channel: str) -> int:
        return self._global.state(channel, self._now(), DAY_MS)[0]

    async def is_current(self, address_id: str, code_hash: str) -> bool:
        code = self._live(address_id, now_ms(self._clock))
        return code is not None and hmac.compare_digest(code.hash, code_hash)

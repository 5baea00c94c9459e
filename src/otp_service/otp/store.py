"""The code state machine: one atomic decision per send and per verify.

`RedisCodeStore` runs one Lua script per decision (otp/lua), on a Redis server or on the
embedded default's in-memory Redis alike (tests/test_store_contract.py runs one contract on
both, and on Redis Cluster). A send decides the client's rate, the sending-paused flag, the
address's cooldown and rolling-24 h cap and the service-wide rolling-24 h cap; on acceptance it
stores the code's hash and queues the sealed delivery job, all or nothing.
"""

import hmac
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from otp_service.clock import DAY_MS, Clock, now_ms
from otp_service.limits.throttle import PRELUDE, ConversionGuard, Members, Rates, throttle_args
from otp_service.net import Client
from otp_service.redisio import RedisClient, RedisKeys, Script, redis_guard, text
from otp_service.settings import Rate

PAUSE_RETRY_MS = 300_000
"""Retry-After of a send refused while sending is paused: only an operator resumes, so clients
are told to come back in minutes, not seconds."""

SEND_SCOPE = "otp_send"
VERIFY_SCOPE = "otp_verify"


class SendStatus(StrEnum):
    OK = "ok"
    RATE_LIMITED = "rate_limited"
    COOLDOWN = "cooldown"
    DAILY_LIMIT = "daily_limit"
    DOMAIN_LIMIT = "domain_limit"
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
    # OTP_RESEND_STRATEGY=reuse. (sealed_code, the new code sealed, is kept beside its hash under
    # reuse and for a code a remembered source requests.)
    reuse: bool = False
    # The (mailbox, client subnet) source's id: remembered once it verified (CONTRACT §6).
    source_id: str | None = None
    # The recipient's registrable domain's id and its daily limit; None: a shared mail provider.
    domain_id: str | None = None
    domain_limit: int = 0


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
    source_id: str | None = None
    remember_ms: int = 0  # how long a source that verifies is remembered; 0: not


@dataclass(frozen=True, slots=True)
class VerifyDecision:
    status: VerifyStatus
    retry_after_ms: int = 0
    attempts_remaining: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsQuery:
    """GET /api/v1/admin/limits: which keys to read (None: not asked about)."""

    client: Client | None
    address_id: str | None
    source_id: str | None
    domain_id: str | None
    channel: str
    rates: Rates
    guard_window_ms: int
    daily_limit: int
    domain_limit: int
    global_limit: int


@dataclass(frozen=True, slots=True)
class LimitsState:
    """limits.lua's reply, by name (times in ms)."""

    client_sends: int
    client_wait: int
    subnet_sends: int
    subnet_wait: int
    guard_sends: int
    guard_verified: int
    guard_recent: int
    blocked: int
    paused: int
    cooldown: int
    daily: int
    daily_wait: int
    remembered_cooldown: int
    remembered_daily: int
    remembered_daily_wait: int
    remembered_sources: int
    remembered: int
    domain: int
    domain_wait: int
    global_sends: int
    global_wait: int
    code_left: int


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

    async def captcha_needed(
        self, client: Client, channel: str, *, global_limit: int, escalation: float, guard: ConversionGuard
    ) -> bool:
        """OTP_CAPTCHA_MODE=adaptive: whether this client's send needs a token now."""
        ...

    async def is_current(self, address_id: str, code_hash: str) -> bool:
        """Whether this is still the address's live code (the worker's superseded check)."""
        ...

    async def limits(self, query: LimitsQuery) -> LimitsState:
        """What the send decision would read now, read only."""
        ...


_CODE = ("otp_service.otp", "_code")
"""The code record's helpers, shared by the send and verify scripts."""
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


def _send_decision(reply: list[Any]) -> SendDecision:
    """send.lua's reply (its header): {status, wait ms or job id[, 1 when the guard first slowed
    the subnet]}, or {'replay', kept status, kept value}."""
    status = reply[0]
    if status == b"replay":
        return _kept(reply[1].decode(), reply[2])
    decided = SendStatus(status.decode())
    if decided is SendStatus.OK:
        return SendDecision(decided, job_id=reply[1].decode())
    first_slowed = len(reply) > 2 and reply[2] == 1
    return SendDecision(decided, retry_after_ms=int(reply[1]), slowed=first_slowed)


class RedisCodeStore:
    _SEND = Script(PRELUDE, _CODE, _IDEMPOTENCY, ("otp_service.otp", "send"))
    _VERIFY = Script(PRELUDE, _CODE, ("otp_service.otp", "verify"))
    _CLAIM = Script(PRELUDE, _IDEMPOTENCY, ("otp_service.otp", "idempotency"))
    _CAPTCHA = Script(PRELUDE, ("otp_service.otp", "captcha_needed"))
    _READ = Script(_IDEMPOTENCY, ("otp_service.otp", "idempotency_read"), reads_only=True)
    _RELEASE = Script(_IDEMPOTENCY, ("otp_service.otp", "idempotency_release"), allow_oom=True)
    _LIMITS = Script(PRELUDE, ("otp_service.otp", "limits"), reads_only=True)

    def __init__(self, redis: RedisClient, keys: RedisKeys, *, clock: Clock) -> None:
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
            k.domain(req.domain_id or "-"),
            k.source_blocked(req.client.subnet),
            k.remembered(req.source_id or "-"),
            k.cooldown(f"{req.address_id}:remembered"),
            k.daily(f"{req.address_id}:remembered"),
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
            req.domain_limit if req.domain_id else 0,
            "1" if req.reuse else "0",
        ]
        async with redis_guard("send"):
            reply = await self._SEND(self._redis, keys, args)
        return _send_decision(reply)

    async def verify(self, req: VerifyRequest) -> VerifyDecision:
        keys = [
            *req.rates.keys(self._keys, req.client),
            self._keys.code(req.address_id),
            self._keys.conversion(req.client.subnet),
            self._keys.remembered(req.source_id or "-"),
            self._keys.remembered_sources(req.address_id),
        ]
        args = [
            *throttle_args(self._clock, req.rates, self._member()),
            req.code_hash,
            req.max_attempts,
            req.remember_ms if req.source_id else 0,
            req.source_id or "-",
        ]
        async with redis_guard("verify"):
            status, value = await self._VERIFY(self._redis, keys, args)
        decided = VerifyStatus(status.decode())
        if decided is VerifyStatus.RATE_LIMITED:
            return VerifyDecision(decided, retry_after_ms=int(value))
        return VerifyDecision(decided, attempts_remaining=int(value))

    async def captcha_needed(
        self, client: Client, channel: str, *, global_limit: int, escalation: float, guard: ConversionGuard
    ) -> bool:
        keys = [self._keys.global_sends(channel), self._keys.conversion(client.subnet)]
        no_rates = Rates("captcha", Rate(1, 1), Rate(1, 1), 1000)  # the prelude's ARGV, unused here
        args = [
            *throttle_args(self._clock, no_rates, "-"),
            global_limit,
            escalation,
            guard.min_sends,
            guard.min_ratio,
        ]
        async with redis_guard("captcha_needed"):
            return bool(await self._CAPTCHA(self._redis, keys, args))

    async def global_usage(self, channel: str) -> int:
        async with redis_guard("usage"):
            count = await self._redis.execute(
                "ZCOUNT", self._keys.global_sends(channel), now_ms(self._clock) - DAY_MS + 1, "+inf"
            )
        return int(count)

    async def is_current(self, address_id: str, code_hash: str) -> bool:
        async with redis_guard("code.current"):
            stored, expires = await self._redis.execute("HMGET", self._keys.code(address_id), "h", "x")
        live = expires is None or int(expires) > now_ms(self._clock)  # see otp/lua/_code.lua
        return stored is not None and live and hmac.compare_digest(stored, code_hash.encode())

    async def limits(self, query: LimitsQuery) -> LimitsState:
        k = self._keys
        none = k.unused  # a key the question does not concern: read, always empty
        client, address = query.client, query.address_id
        keys = [
            *(query.rates.keys(k, client) if client else [none, none]),
            k.conversion(client.subnet) if client else none,
            k.source_blocked(client.subnet) if client else none,
            k.sending_paused,
            k.cooldown(address) if address else none,
            k.daily(address) if address else none,
            k.cooldown(f"{address}:remembered") if address else none,
            k.daily(f"{address}:remembered") if address else none,
            k.remembered_sources(address) if address else none,
            k.remembered(query.source_id) if query.source_id else none,
            k.domain(query.domain_id) if query.domain_id else none,
            k.global_sends(query.channel),
            k.code(address) if address else none,
        ]
        args = [
            *throttle_args(self._clock, query.rates, "-"), query.guard_window_ms, query.daily_limit,
            query.domain_limit if query.domain_id else 0, query.global_limit,
        ]  # fmt: skip
        async with redis_guard("limits"):
            reply = await self._LIMITS(self._redis, keys, args)
        return LimitsState(*(int(v) for v in reply))

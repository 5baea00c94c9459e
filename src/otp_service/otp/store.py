"""The code state machine: one atomic decision per send and per verify.

`RedisCodeStore` runs one Lua script per decision (otp/lua), on a Redis server or on the
embedded default's in-memory Redis alike (tests/test_store_contract.py runs one contract on
both, and on Redis Cluster). A send decides the client's rate, the sending-paused flag, the
address's cooldown and rolling-24 h cap and the service-wide rolling-24 h cap; on acceptance it
stores the code's hash and queues the sealed delivery job, all or nothing.
"""

import functools
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from otp_service.clock import DAY_MS, Clock, now_ms
from otp_service.limits.throttle import PRELUDE, ConversionGuard, Members, Rates, throttle_args
from otp_service.net import Client
from otp_service.redisio import Arg, RedisClient, RedisKeys, Script, positional, redis_guard, text
from otp_service.sends import DeliveryStatus

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
    CAPTCHA_REQUIRED = "captcha_required"
    KEY_REUSED = "idempotency_key_reused"


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


class Captcha(StrEnum):
    """What a send's captcha says, for the checks a person passes with a valid token (a
    reputation block, a paused provider: CONTRACT §6)."""

    MISSING = "missing"  # a captcha provider is configured and the send has no token
    PASSED = "passed"  # the send carried a valid token


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
    """The exact address's id: its code (CONTRACT §6, an address is its own identity)."""
    channel: str
    rates: Rates
    guard: ConversionGuard
    cooldown_ms: int
    daily_limit: int
    global_limit: int
    code_hash: str
    code_ttl_ms: int
    job_payload: bytes
    """The sealed job: it holds the code, so it is also what is kept beside the hash when the
    code may be emailed again (under reuse, and for a code a remembered source requests)."""
    # OTP_RESEND_STRATEGY=reuse, and the least time a live code must have left to be re-sent.
    reuse: bool = False
    reuse_min_left_ms: int = 0
    idempotency: Idempotency | None = None
    # The (mailbox, client subnet) source's id: remembered once it verified (CONTRACT §6).
    source_id: str | None = None
    # The recipient's registrable domain's id and its daily limit; None: a shared mail provider.
    domain_id: str | None = None
    domain_limit: int = 0
    mailbox_id: str | None = None
    """The mailbox's id, which the cooldown and daily cap count (None: the address's own)."""
    global_reserve: float = 0.0
    """The share of the global cap kept for remembered sources."""
    captcha: "Captcha | None" = None
    """What the captcha says of this send (None: no captcha provider configured)."""
    test: bool = False
    """A test recipient (CONTRACT §3): the fixed code is stored; nothing is queued or counted."""
    send_id: str = ""
    """The send's id (CONTRACT §3), under which an accepted send's status is kept."""
    status_keep_ms: int = 0
    """How long that status is kept: the code's lifetime plus an hour."""


@dataclass(frozen=True, slots=True)
class SendDecision:
    status: SendStatus
    retry_after_ms: int = 0
    job_id: str | None = None
    slowed: bool = False
    """The low-conversion guard refused the subnet for the first time in its window."""
    replayed: bool = False
    """The answer of an earlier request with the same Idempotency-Key."""
    withheld: bool = False
    """Accepted and counted, but nothing stored or queued: a "not me" report holds (send.lua)."""
    send_id: str = ""
    """An accepted send's id; a replay's is the first answer's."""


@dataclass(frozen=True, slots=True)
class SendState:
    status: DeliveryStatus
    updated_ms: int


@dataclass(frozen=True, slots=True)
class Claim:
    status: ClaimStatus
    decision: SendDecision | None = None  # REPLAY: the first answer; RATE_LIMITED: the wait


def _kept(status: str, value: bytes | str | None, send_id: bytes | None = None) -> SendDecision:
    """A kept answer as a replayed decision."""
    decided = SendStatus(status)
    if decided is SendStatus.OK:
        return SendDecision(decided, job_id=text(value or b""), replayed=True, send_id=text(send_id or b""))
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
    mailbox_id: str | None = None  # whose remembered sources it joins (None: the address's own)
    test_entry_id: str | None = None
    """A test recipient's entry (its address or `*@domain`), whose guesses count together."""
    test_guesses_ms: int = 0


@dataclass(frozen=True, slots=True)
class VerifyDecision:
    status: VerifyStatus
    retry_after_ms: int = 0
    attempts_remaining: int = 0
    send_id: str | None = None  # APPROVED: the send that last emailed the code (otp.verified)
    superseded: bool = False  # INVALID, MAX_ATTEMPTS: the wrong code was the replaced one's


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsQuery:
    """GET /api/v1/admin/limits: which keys to read (None: not asked about)."""

    client: Client | None
    address_id: str | None
    mailbox_id: str | None
    source_id: str | None
    domain_id: str | None
    channel: str
    rates: Rates
    guard: ConversionGuard
    daily_limit: int
    domain_limit: int
    global_limit: int
    global_reserve: float = 0.0
    captcha_share: float = 0.0
    """OTP_CAPTCHA_MODE=adaptive's escalation (0: a send needs no token, or always sends one)."""
    captcha: Captcha | None = None
    """The send asked about: no token (MISSING) with a captcha provider, else None."""


@dataclass(frozen=True, slots=True)
class LimitsState:
    """limits.lua's reply, by name (times in ms)."""

    refusal: str | None
    """What a send (without a captcha token) would be refused with now; None: accepted."""
    wait: int
    client_sends: int
    client_wait: int
    subnet_sends: int
    subnet_wait: int
    guard_sends: int
    guard_verified: int
    guard_slows: int
    guard_recent: int
    client_blocked: int
    subnet_blocked: int
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
    reported: int
    """How long the address's "not me" report holds (0: none)."""
    withheld: int
    """1: the send would be answered 202 and emailed nothing (reported, not a remembered source)."""

    @classmethod
    def parse(cls, reply: list[Any]) -> "LimitsState":
        named = {text(name): value for name, value in zip(reply[::2], reply[1::2], strict=True)}
        refusal = text(named.pop("refusal"))
        return cls(refusal=refusal or None, **{name: int(value) for name, value in named.items()})


@dataclass(frozen=True, slots=True)
class DecisionKeys:
    """The send decision's keys: KEYS[1..15] of send.lua, limits.lua and captcha_needed.lua, in
    the order of otp/lua/_decide.lua's header."""

    client: str
    subnet: str
    conversion: str
    subnet_blocked: str
    client_blocked: str
    paused: str
    remembered: str
    cooldown: str
    daily: str
    remembered_cooldown: str
    remembered_daily: str
    domain: str
    global_sends: str
    code: str
    reported: str
    """The exact address's "not me" report (otp/not_me.py)."""

    @classmethod
    def of(
        cls, k: RedisKeys, rates: Rates, channel: str, client: Client | None, address_id: str | None,
        mailbox_id: str | None, source_id: str | None, domain_id: str | None,
    ) -> "DecisionKeys":  # fmt: skip
        """None: the question does not concern it (the look-up may ask about an address or a
        client alone): its keys are RedisKeys.unused, which read empty."""
        none = k.unused
        client_log, subnet_log = rates.keys(k, client) if client is not None else (none, none)
        return cls(
            client=client_log,
            subnet=subnet_log,
            conversion=k.conversion(client.subnet) if client is not None else none,
            subnet_blocked=k.source_blocked(client.subnet) if client is not None else none,
            client_blocked=k.client_blocked(client.key) if client is not None else none,
            paused=k.sending_paused,
            remembered=k.remembered(source_id) if source_id is not None else none,
            cooldown=k.cooldown(mailbox_id) if mailbox_id is not None else none,
            daily=k.daily(mailbox_id) if mailbox_id is not None else none,
            remembered_cooldown=k.remembered_cooldown(source_id) if source_id is not None else none,
            remembered_daily=k.remembered_daily(source_id) if source_id is not None else none,
            domain=k.domain(domain_id) if domain_id is not None else none,
            global_sends=k.global_sends(channel),
            code=k.code(address_id) if address_id is not None else none,
            reported=k.reported(address_id) if address_id is not None else none,
        )


@dataclass(frozen=True, slots=True)
class DecisionArgs:
    """The send decision's arguments: ARGV[8..16] (after throttle_args), in the order of
    otp/lua/_decide.lua's header."""

    domain_limit: int
    """0: not counted (no recipient domain, or a shared mail provider)."""
    guard_min_sends: int
    guard_min_ratio: float
    guard_limit: int
    guard_window_ms: int
    daily_limit: int
    global_limit: int
    global_strangers: int
    """Of the global cap, what sources that are not remembered may use (the rest: the reserve)."""
    paused_wait_ms: int
    captcha_share: float
    """The share of the global cap from which a send needs a captcha token (0: never asked)."""
    captcha: int
    """0: no captcha provider; 1: one is configured and the send has no token; 2: a valid one."""

    @classmethod
    def of(
        cls, guard: ConversionGuard, *, daily_limit: int, global_limit: int, domain_limit: int,
        global_reserve: float = 0.0, captcha_share: float = 0.0, captcha: Captcha | None = None,
    ) -> "DecisionArgs":  # fmt: skip
        window_ms = guard.rate.period_seconds * 1000
        strangers = global_limit - math.ceil(global_limit * global_reserve)
        return cls(
            domain_limit, guard.min_sends, guard.min_ratio, guard.rate.limit, window_ms, daily_limit,
            global_limit, strangers, PAUSE_RETRY_MS, captcha_share, _CAPTCHA_ARG[captcha],
        )  # fmt: skip


_CAPTCHA_ARG = {None: 0, Captcha.MISSING: 1, Captcha.PASSED: 2}


@functools.lru_cache(maxsize=64)
def _decision_args(
    guard: ConversionGuard, daily_limit: int, global_limit: int, domain_limit: int, global_reserve: float,
    captcha_share: float, captcha: Captcha | None,
) -> tuple[Arg, ...]:  # fmt: skip
    """DecisionArgs in the script's order: the same few combinations on every request (a service's
    settings, a domain counted or not, the captcha's three states), built once each."""
    rules = DecisionArgs.of(
        guard, daily_limit=daily_limit, global_limit=global_limit, domain_limit=domain_limit,
        global_reserve=global_reserve, captcha_share=captcha_share, captcha=captcha,
    )  # fmt: skip
    return positional(rules)


@dataclass(frozen=True, slots=True)
class SendKeys:
    """send.lua's own keys, KEYS[16..19]."""

    jobs: str
    idempotency: str
    slowed: str
    send_status: str


@dataclass(frozen=True, slots=True)
class SendArgs:
    """send.lua's own arguments, ARGV[19..29]."""

    cooldown_ms: int
    code_hash: str
    code_ttl_ms: int
    job: bytes
    reuse: str
    reuse_min_left_ms: int
    fingerprint: str
    idempotency_keep_ms: int
    test: str
    send_id: str
    status_keep_ms: int


@dataclass(frozen=True, slots=True)
class VerifyKeys:
    """verify.lua's KEYS, in its header's order."""

    client: str
    subnet: str
    code: str
    conversion: str
    remembered: str
    remembered_sources: str
    test_guesses: str


@dataclass(frozen=True, slots=True)
class VerifyArgs:
    """verify.lua's own arguments, ARGV[8..12]."""

    code_hash: str
    max_attempts: int
    remember_ms: int
    """How long a source that verifies is remembered (0: not)."""
    source_id: str
    test_guesses_ms: int
    """A test recipient's: how long its fixed code's wrong guesses count together (0: not one)."""


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

    async def decide_send(self, req: SendRequest, *, trace: str | None = None) -> SendDecision:
        """`trace`: the request's trace context (a W3C traceparent, otp_service/tracing), which
        the job then carries; only given when tracing is on."""
        ...

    async def verify(self, req: VerifyRequest) -> VerifyDecision: ...

    async def global_usage(self, channel: str) -> int:
        """Accepted sends in the rolling 24 h."""
        ...

    async def captcha_needed(self, query: LimitsQuery) -> bool:
        """OTP_CAPTCHA_MODE=adaptive: whether this send needs a token now (query.captcha_share
        above 0)."""
        ...

    async def is_current(self, address_id: str, code_hash: str) -> bool:
        """Whether this is still the address's live code (the worker's superseded check)."""
        ...

    async def limits(self, query: LimitsQuery) -> LimitsState:
        """What the send decision would read now, read only."""
        ...

    async def mark_send(
        self, send_id: str, status: DeliveryStatus, *, message: tuple[str, str] | None = None,
        trace: str | None = None,
    ) -> bool:  # fmt: skip
        """Move one send's status forward (otp/lua/send_status.lua): whether it moved. `message`:
        (provider, message id) of the email it sent, which the provider's events name; `trace`:
        with it, the provider call's trace context (tracing on: otp_service/tracing)."""
        ...

    async def mark_message(self, provider: str, message_id: str, status: DeliveryStatus | None) -> str | None:
        """Move the status of the send whose email the provider took under `message_id` (None:
        only find it, for an event that moves no status, a complaint): its send_id, or None when
        none is known (not ours, or expired)."""
        ...

    async def send_status(self, send_id: str) -> "SendState | None":
        """One send's status (GET /api/v1/auth/otp/sends/{send_id}); None: unknown or expired."""
        ...

    async def message_trace(self, provider: str, message_id: str) -> str | None:
        """The trace context of the provider call that sent the email the provider took under
        `message_id` (kept by mark_send); None when unknown, expired, or sent untraced."""
        ...


_CODE = ("otp_service.otp", "_code")
"""The code record's helpers, shared by the send and verify scripts."""
_IDEMPOTENCY = ("otp_service.otp", "_idempotency")
"""The Idempotency-Key record's helpers, shared by the scripts that read or write it."""
_DECIDE = ("otp_service.otp", "_decide")
"""The send decision's checks, shared by send.lua and the read-only scripts that ask about it."""
_SEND_STATUS = ("otp_service.otp", "_send_status")
"""How a send's status moves, shared by send.lua (superseded) and send_status.lua."""


def _claim_of(reply: list[Any]) -> Claim | None:
    """A script's {status[, …]} about a key's record as a Claim; None for 'none' (no record)."""
    if reply[0] == b"none":
        return None
    status = ClaimStatus(reply[0].decode())
    if status is ClaimStatus.REPLAY:
        return Claim(status, _kept(reply[1].decode(), reply[2], reply[3] if len(reply) > 3 else None))
    if status is ClaimStatus.RATE_LIMITED:
        return Claim(status, SendDecision(SendStatus.RATE_LIMITED, retry_after_ms=int(reply[1])))
    return Claim(status)


def _send_decision(reply: list[Any], send_id: str) -> SendDecision:
    """send.lua's reply (its header): {status, wait ms or job id (or 'withheld')[, 1 when the guard
    first slowed the subnet]}, or {'replay', kept status, kept value, kept send_id}. An accepted
    send's id is the request's own (`send_id`)."""
    status = reply[0]
    if status == b"replay":
        return _kept(reply[1].decode(), reply[2], reply[3] if len(reply) > 3 else None)
    decided = SendStatus(status.decode())
    if decided is SendStatus.OK:
        if reply[1] == b"withheld":
            return SendDecision(decided, withheld=True, send_id=send_id)
        return SendDecision(decided, job_id=reply[1].decode(), send_id=send_id)
    first_slowed = len(reply) > 2 and reply[2] == 1
    return SendDecision(decided, retry_after_ms=int(reply[1]), slowed=first_slowed)


class RedisCodeStore:
    _SEND = Script(
        PRELUDE, _CODE, _IDEMPOTENCY, _DECIDE, _SEND_STATUS, ("otp_service.otp", "send"), durable=True
    )
    _VERIFY = Script(PRELUDE, _CODE, ("otp_service.otp", "verify"), durable=True)
    _CLAIM = Script(
        PRELUDE, _IDEMPOTENCY, ("otp_service.otp", "idempotency"), durable=True,
        durable_unless=(b"new", b"pending"),  # the send decides and waits; or another request answers
    )  # fmt: skip
    _CAPTCHA = Script(PRELUDE, _CODE, _DECIDE, ("otp_service.otp", "captcha_needed"), reads_only=True)
    _READ = Script(
        _IDEMPOTENCY, ("otp_service.otp", "idempotency_read"), reads_only=True, durable=True,
        durable_unless=(b"none", b"pending"),  # a kept answer is on the replicas before it is repeated
    )  # fmt: skip
    _RELEASE = Script(_IDEMPOTENCY, ("otp_service.otp", "idempotency_release"), allow_oom=True)
    _LIMITS = Script(PRELUDE, _CODE, _DECIDE, ("otp_service.otp", "limits"), reads_only=True)
    _CURRENT = Script(_CODE, ("otp_service.otp", "code_current"), reads_only=True)
    _MARK = Script(_SEND_STATUS, ("otp_service.otp", "send_status"))

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

    async def decide_send(self, req: SendRequest, *, trace: str | None = None) -> SendDecision:
        k, idem = self._keys, req.idempotency
        decision = DecisionKeys.of(
            k, req.rates, req.channel, req.client, req.address_id, req.mailbox_id or req.address_id,
            req.source_id, req.domain_id,
        )  # fmt: skip
        own_keys = SendKeys(
            k.jobs, k.idempotency(idem.key_id) if idem else k.unused, k.slowed(req.client.subnet),
            k.send(req.send_id) if req.send_id else k.unused,
        )  # fmt: skip
        rules = _decision_args(
            req.guard, req.daily_limit, req.global_limit, req.domain_limit if req.domain_id else 0,
            req.global_reserve, 0.0, req.captcha,
        )  # fmt: skip
        own_args = SendArgs(
            req.cooldown_ms, req.code_hash, req.code_ttl_ms, req.job_payload, "1" if req.reuse else "0",
            req.reuse_min_left_ms, idem.fingerprint if idem else "", idem.keep_ms if idem else 0,
            "1" if req.test else "0", req.send_id, req.status_keep_ms,
        )  # fmt: skip
        keys = (*positional(decision), *positional(own_keys))
        args = (
            *throttle_args(self._clock, req.rates, self._member()),
            *rules,
            *positional(own_args),
        )
        if trace is not None:  # ARGV[30], after the script's fixed arguments: absent without tracing
            args = (*args, trace)
        async with redis_guard("send"):
            reply = await self._SEND(self._redis, keys, args)
        return _send_decision(reply, req.send_id)

    async def verify(self, req: VerifyRequest) -> VerifyDecision:
        k = self._keys
        client_log, subnet_log = req.rates.keys(k, req.client)
        keys = VerifyKeys(
            client_log, subnet_log, k.code(req.address_id), k.conversion(req.client.subnet),
            k.remembered(req.source_id) if req.source_id else k.unused,
            k.remembered_sources(req.mailbox_id or req.address_id),
            k.test_guesses(req.test_entry_id) if req.test_entry_id else k.unused,
        )  # fmt: skip
        own_args = VerifyArgs(
            req.code_hash, req.max_attempts, req.remember_ms if req.source_id else 0, req.source_id or "",
            req.test_guesses_ms if req.test_entry_id else 0,
        )  # fmt: skip
        args = (*throttle_args(self._clock, req.rates, self._member()), *positional(own_args))
        async with redis_guard("verify"):
            reply = await self._VERIFY(self._redis, positional(keys), args)
        decided, value = VerifyStatus(reply[0].decode()), int(reply[1])
        if decided is VerifyStatus.RATE_LIMITED:
            return VerifyDecision(decided, retry_after_ms=value)
        if decided is VerifyStatus.APPROVED:  # {'approved', 0, the code's send id or ''}
            return VerifyDecision(decided, send_id=text(reply[2]) or None)
        # {'invalid' | 'max_attempts', attempts remaining, 1 when superseded}; {'expired', 0}
        return VerifyDecision(
            decided, attempts_remaining=value, superseded=len(reply) > 2 and int(reply[2]) == 1
        )

    async def captcha_needed(self, query: LimitsQuery) -> bool:
        async with redis_guard("captcha_needed"):
            return bool(await self._decision(self._CAPTCHA, query))

    async def global_usage(self, channel: str) -> int:
        async with redis_guard("usage"):
            count = await self._redis.execute(
                "ZCOUNT", self._keys.global_sends(channel), now_ms(self._clock) - DAY_MS + 1, "+inf"
            )
        return int(count)

    async def is_current(self, address_id: str, code_hash: str) -> bool:
        args: list[Arg] = [now_ms(self._clock), code_hash]
        async with redis_guard("code.current"):
            return bool(await self._CURRENT(self._redis, [self._keys.code(address_id)], args))

    async def mark_send(
        self, send_id: str, status: DeliveryStatus, *, message: tuple[str, str] | None = None,
        trace: str | None = None,
    ) -> bool:  # fmt: skip
        k = self._keys
        keys = [k.send(send_id), k.sent_message(*message) if message else k.unused]
        args: list[Arg] = [status.value, now_ms(self._clock), send_id if message else ""]
        if message and trace is not None:
            args.append(trace)
        async with redis_guard("send.mark"):
            moved = await self._MARK(self._redis, keys, args)
        return bool(moved)

    async def mark_message(self, provider: str, message_id: str, status: DeliveryStatus | None) -> str | None:
        async with redis_guard("send.message"):
            found = await self._redis.execute("GET", self._keys.sent_message(provider, message_id))
        if found is None:
            return None
        send_id = text(found)
        if status is not None:
            await self.mark_send(send_id, status)
        return send_id

    async def message_trace(self, provider: str, message_id: str) -> str | None:
        async with redis_guard("send.trace"):
            found = await self._redis.execute("GET", self._keys.sent_message(provider, message_id))
            if found is None:
                return None
            carried = await self._redis.execute("HGET", self._keys.send(text(found)), "c")
        return None if carried is None else text(carried)

    async def send_status(self, send_id: str) -> "SendState | None":
        async with redis_guard("send.status"):
            status, updated = await self._redis.execute("HMGET", self._keys.send(send_id), "s", "t")
        if status is None or updated is None:
            return None
        return SendState(DeliveryStatus(text(status)), int(updated))

    async def limits(self, query: LimitsQuery) -> LimitsState:
        k = self._keys
        sources = k.remembered_sources(query.mailbox_id) if query.mailbox_id else k.unused
        async with redis_guard("limits"):
            reply = await self._decision(self._LIMITS, query, sources)
        return LimitsState.parse(reply)

    async def _decision(self, script: Script, query: LimitsQuery, *more_keys: str) -> Any:
        """Run a read-only script over the send decision's keys and arguments."""
        decision = DecisionKeys.of(
            self._keys, query.rates, query.channel, query.client, query.address_id, query.mailbox_id,
            query.source_id, query.domain_id,
        )  # fmt: skip
        rules = _decision_args(
            query.guard, query.daily_limit, query.global_limit, query.domain_limit if query.domain_id else 0,
            query.global_reserve, query.captcha_share, query.captcha,
        )  # fmt: skip
        args = (*throttle_args(self._clock, query.rates, "-"), *rules)
        return await script(self._redis, (*positional(decision), *more_keys), args)

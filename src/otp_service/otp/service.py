"""Send and verify: validate, one store decision, map the outcome to the contract."""

import asyncio
import dataclasses
import re
import secrets
import time
from dataclasses import dataclass
from typing import Protocol

from otp_service import tracing
from otp_service.clock import DAY_MS
from otp_service.delivery.jobs import JobContent, JobSealer
from otp_service.errors import (
    CaptchaRequired,
    CodeExpired,
    Cooldown,
    DailyLimit,
    DomainLimit,
    GlobalLimit,
    IdempotencyKeyReused,
    InvalidCode,
    InvalidRequest,
    MaxAttemptsReached,
    NotFound,
    RateLimited,
    SendingPaused,
    ServiceError,
    Unavailable,
    UndeliverableEmail,
)
from otp_service.events.outbox import EventOutbox
from otp_service.limits.throttle import ConversionGuard, Rates, Throttle
from otp_service.locales import Locale
from otp_service.logs import get_logger, mask_email, mask_subnet
from otp_service.metrics import NOT_ME, REQUESTS
from otp_service.net import Client
from otp_service.otp.codes import CodeCrypto, generate_code
from otp_service.otp.store import (
    SEND_SCOPE,
    VERIFY_SCOPE,
    Captcha,
    ClaimStatus,
    CodeStore,
    Idempotency,
    LimitsQuery,
    LimitsState,
    SendDecision,
    SendRequest,
    SendState,
    SendStatus,
    VerifyRequest,
    VerifyStatus,
)
from otp_service.otp.test_recipients import TestRecipients
from otp_service.otp.tokens import TokenIssuer
from otp_service.settings import Rate, Settings
from otp_service.validation.address import AddressValidator, normalize_email
from otp_service.validation.captcha import CaptchaCheck
from otp_service.validation.deliverability import DeliverabilityCheck, Verdict
from otp_service.validation.domains import RecipientDomains
from otp_service.validation.mailbox import Mailboxes
from otp_service.verifies import VerifyFailure

log = get_logger("otp")

CHANNEL = "email"
REUSE_MIN_LEFT_MS = 30_000
IDEMPOTENCY_KEEP_MS = 600_000
"""An Idempotency-Key's answer is repeated for 10 minutes."""
CLAIM_POLL_FIRST = 0.01
CLAIM_POLL_CAP = 0.5
"""Seconds between polls of a pending Idempotency-Key: doubling from 10 ms, at most 500 ms."""
STATUS_SCOPE = "otp_status"
STATUS_KEEP_EXTRA_MS = 3_600_000
"""A send's status outlives its code by an hour (CONTRACT §3)."""
SEND_ID_BYTES = 16
"""128 random bits (CONTRACT §3: at least 128, URL-safe)."""
IDEMPOTENCY_LEASE_MS = 15_000
"""How long a claimed key waits for its request's answer (the slowest admission: a captcha
siteverify and a DNS lookup, each with its own timeout) before a retry decides afresh."""
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")

_WITHHELD = NOT_ME.labels("withheld")


@dataclass(frozen=True, slots=True)
class Verified:
    email: str
    token: str | None = None
    token_expires_in: int | None = None
    test: bool = False  # a test recipient's fixed code (CONTRACT §3)


@dataclass(frozen=True, slots=True)
class Identity:
    """What the send decision keys an address by (CONTRACT §6): the exact address's id (its code),
    its mailbox and the mailbox's id (the cooldown and daily cap only), the recipient domain's
    budget (None: a shared mail provider) and the remembered-source id of (mailbox, subnet) when
    the client is known."""

    address_id: str
    mailbox: str
    mailbox_id: str
    domain: str | None
    source_id: str | None


@dataclass(frozen=True, slots=True)
class SendAccepted:
    expires_in: int
    resend_after: int
    replayed: bool = False  # the answer of an earlier request with the same Idempotency-Key
    send_id: str = ""  # CONTRACT §3: GET /api/v1/auth/otp/sends/{send_id}


_SEND_REJECTIONS: dict[SendStatus, type[RateLimited | Cooldown | DailyLimit | DomainLimit | GlobalLimit]] = {
    SendStatus.RATE_LIMITED: RateLimited,
    SendStatus.COOLDOWN: Cooldown,
    SendStatus.DAILY_LIMIT: DailyLimit,
    SendStatus.DOMAIN_LIMIT: DomainLimit,
    SendStatus.GLOBAL_LIMIT: GlobalLimit,
}


class VerifiedObserver(Protocol):
    """Told of each approved verify, never awaited (delivery/timing.py: the time from the email
    to the sign-in); a protocol, so that otp needs nothing of delivery but the jobs' format."""

    def verified(self, email: str, app: str = "") -> None: ...


class VerifyFailureObserver(Protocol):
    """Told of each refused verify and why, never awaited (delivery/verify_failures.py counts
    them for the admin stats, in process); a protocol, as VerifiedObserver is."""

    def failed(self, email: str, reason: VerifyFailure) -> None: ...


def _normalised_or_raw(raw_email: str) -> str:
    """The address as the send reads it, or as given when it is not one (the send refuses it)."""
    try:
        return normalize_email(raw_email)
    except ServiceError:
        return raw_email


def verified_event(email: str, send_id: str | None = None) -> dict[str, str | None]:
    """otp.verified's data (CONTRACT §7); `send_id`: the send that last emailed the code."""
    return {"email": email, "job_id": None, "provider": None, "message_id": None, "send_id": send_id}


class OtpService:
    def __init__(
        self,
        *,
        settings: Settings,
        store: CodeStore,
        throttle: Throttle,
        validator: AddressValidator,
        crypto: CodeCrypto,
        sealer: JobSealer,
        tokens: TokenIssuer | None = None,
        captcha: CaptchaCheck | None = None,
        deliverability: DeliverabilityCheck | None = None,
        events: EventOutbox | None = None,
        sent_to_verified: VerifiedObserver | None = None,
        verify_failures: VerifyFailureObserver | None = None,
    ) -> None:
        self._s = settings
        self._sent_to_verified = sent_to_verified
        self._verify_failures = verify_failures
        self._events = events
        self._store = store
        self._throttle = throttle
        self._sealer = sealer
        self._validator = validator
        self._crypto = crypto
        self._tokens = tokens
        self._captcha = captcha
        self._deliverability = deliverability
        self._guard = ConversionGuard.of(settings)
        self._mailboxes = Mailboxes.of(settings)
        self._domains = RecipientDomains.of(settings)
        self._test = TestRecipients(settings.test_recipients)
        # The subnet's send log is kept for the guard's window too: the guard counts it.
        self._send_rates = Rates.of(settings, SEND_SCOPE, keep_s=self._guard.rate.period_seconds)
        self._verify_rates = Rates.of(settings, VERIFY_SCOPE)
        # CONTRACT §2a names no subnet rate for the status look-up: ten clients' worth, the ratio
        # of the send and verify defaults (3 -> 30, 10 -> 100).
        status_rate = settings.rate(STATUS_SCOPE)
        self._status_rates = Rates(
            STATUS_SCOPE, status_rate, Rate(status_rate.limit * 10, status_rate.period_seconds),
            status_rate.period_seconds * 1000,
        )  # fmt: skip
        self._global_limit = settings.global_daily_limits.get(CHANNEL, 0)
        # The application's label (CONTRACT §8: configured ids only, '' the service-wide one).
        self._sends = REQUESTS.labels("send", settings.app)
        self._verifies = REQUESTS.labels("verify", settings.app)
        self._accepted = SendAccepted(settings.code_ttl, settings.rate_limit_ttl)
        self._replayed = SendAccepted(settings.code_ttl, settings.rate_limit_ttl, replayed=True)
        self._reuse = settings.resend_strategy == "reuse"
        # A code with less than this left is replaced, not re-sent: nobody types a code in the
        # seconds it has left.
        self._reuse_min_left_ms = min(REUSE_MIN_LEFT_MS, settings.code_ttl * 1000 // 2)

    async def count_unrouted(self, scope: str, client: Client) -> None:
        """A request for an application that does not exist (CONTRACT §8: 404 not_found) counts
        against the client's rate of what it asked (SEND_SCOPE, VERIFY_SCOPE, STATUS_SCOPE) like
        any request: RateLimited when over."""
        by_scope = {SEND_SCOPE: self._send_rates, VERIFY_SCOPE: self._verify_rates}
        rates = by_scope.get(scope, self._status_rates)
        wait = await self._throttle.hit(rates, client)
        if wait:
            raise RateLimited(retry_after=wait / 1000)

    async def count_refused(self, client: Client) -> None:
        """A send refused before any decision (a malformed body, a refused address, a failed
        captcha) still counts against the client's and subnet's rates: RateLimited when over."""
        wait = await self._throttle.hit(self._send_rates, client)
        if wait:
            raise RateLimited(retry_after=wait / 1000)

    async def send(
        self, raw_email: str, client: Client, *, captcha_token: str | None = None,
        locale: Locale | None = None, idempotency_key: str | None = None,
    ) -> SendAccepted:  # fmt: skip
        idem = None
        if idempotency_key is not None:
            # The key belongs to the address as the service reads it: `IDV@` and `idv@` are one.
            address = _normalised_or_raw(raw_email)
            idem = await self._idempotency(idempotency_key, client, address, address, captcha_token, locale)
            replay = await self._claim(idem, client)
            if replay is not None:
                return self._answer(replay, None, client)
        try:
            email, captcha = await self._admit(raw_email, client, captcha_token)
        except ServiceError as refused:
            if idem is not None:
                await self._store.release(idem)
            if not isinstance(refused, Unavailable):  # the captcha provider down: nothing counted
                await self.count_refused(client)
            raise refused from None
        # The code belongs to the exact address; only the cooldown and daily cap count its mailbox,
        # whatever its spelling (CONTRACT §6).
        fixed = self._test.code_for(email) if self._test else None
        code = fixed if fixed is not None else generate_code(self._s.code_length)
        ident = self.identity(email, client)
        address_id, domain = ident.address_id, ident.domain
        code_hash = self._crypto.code_hash(email, code)
        send_id = secrets.token_urlsafe(SEND_ID_BYTES)
        payload = b""
        if fixed is None:
            content = JobContent(
                email,
                code,
                address_id,
                code_hash,
                locale or self._s.default_locale,
                client.subnet,
                client.key,
                send_id,
                self._s.app,
            )
            payload = self._sealer.seal(content)
        else:
            log.info("otp.test_recipient", extra={"email": mask_email(email), "action": "send"})
        request = SendRequest(
            client=client,
            address_id=address_id,
            channel=CHANNEL,
            rates=self._send_rates,
            guard=self._guard,
            cooldown_ms=self._s.rate_limit_ttl * 1000,
            daily_limit=self._s.per_account_daily_limit,
            global_limit=self._global_limit,
            code_hash=code_hash,
            code_ttl_ms=self._s.code_ttl * 1000,
            job_payload=payload,
            reuse=self._reuse,
            source_id=ident.source_id,
            reuse_min_left_ms=self._reuse_min_left_ms,
            idempotency=idem,
            domain_id=self._crypto.domain_id(domain) if domain is not None else None,
            domain_limit=self._domains.limit,
            mailbox_id=ident.mailbox_id,
            global_reserve=self._s.global_reserve,
            captcha=captcha,
            test=fixed is not None,
            send_id=send_id,
            status_keep_ms=self._s.code_ttl * 1000 + STATUS_KEEP_EXTRA_MS,
        )
        if tracing.hooks is None:
            decision = await self._store.decide_send(request)
        else:  # OpenTelemetry configured: the job carries this request's trace (otp_service/tracing)
            decision = await self._store.decide_send(request, trace=tracing.hooks.carried())
        return self._answer(decision, email, client)

    async def send_status(self, send_id: str, client: Client) -> SendState:
        """What became of one send (CONTRACT §3), for the client that holds its id: counted
        against the client's `otp_status` rate first; NotFound when unknown or expired."""
        wait = await self._throttle.hit(self._status_rates, client)
        if wait:
            raise RateLimited(retry_after=wait / 1000)
        # token_urlsafe(16) is 22 characters; anything far off is no id of ours.
        state = await self._store.send_status(send_id) if 0 < len(send_id) <= 64 else None
        if state is None:
            raise NotFound("No such send, or it expired")
        return state

    def identity(self, email: str, client: Client | None) -> Identity:
        mailbox = self._mailboxes.key(email)
        source = self._crypto.source_id(mailbox, client.subnet) if client is not None else None
        address_id = self._crypto.address_id(email)
        mailbox_id = address_id if mailbox == email else self._crypto.address_id(mailbox)
        return Identity(address_id, mailbox, mailbox_id, self._domains.budget(email), source)

    async def limits(self, email: str | None, client: Client | None) -> tuple[Identity | None, LimitsState]:
        """What the send decision would read now for this address and client (either may be
        None), read only: GET /api/v1/admin/limits."""
        ident = self.identity(email, client) if email is not None else None
        adaptive = self._captcha is not None and self._s.captcha_mode == "adaptive"
        return ident, await self._store.limits(self._query(client, ident, adaptive=adaptive))

    def _query(self, client: Client | None, ident: Identity | None, *, adaptive: bool) -> LimitsQuery:
        """A read-only question to the send decision (the limits look-up, the adaptive captcha),
        about a send without a captcha token."""
        return LimitsQuery(
            client=client, address_id=ident.address_id if ident else None,
            mailbox_id=ident.mailbox_id if ident else None, source_id=ident.source_id if ident else None,
            domain_id=self._crypto.domain_id(ident.domain) if ident and ident.domain else None,
            channel=CHANNEL, rates=self._send_rates, guard=self._guard,
            daily_limit=self._s.per_account_daily_limit, domain_limit=self._domains.limit,
            global_limit=self._global_limit, global_reserve=self._s.global_reserve,
            captcha_share=self._s.captcha_escalation if adaptive else 0.0,
            captcha=Captcha.MISSING if self._captcha is not None else None,
        )  # fmt: skip

    def check_address(self, raw_email: str) -> str:
        """The address as the send path normalises it, or the refusal it would get (no network)."""
        return self._validator.check(raw_email)

    def _answer(self, decision: SendDecision, email: str | None, client: Client) -> SendAccepted:
        """The decision as the contract's answer: accepted, or the refusal raised."""
        if decision.replayed:
            log.info("otp.send_replayed", extra={"status": decision.status})
        if decision.status is SendStatus.OK:
            if decision.replayed:
                return dataclasses.replace(self._replayed, send_id=decision.send_id)
            # DEBUG: the worker's `delivery.sent` is the line per email (the INFO line here cost an
            # accepted send a fifth of its server CPU: README, "Performance").
            log.debug("otp.send_accepted", extra={"email": mask_email(email or ""), "job": decision.job_id})
            self._sends.inc()
            if decision.withheld:  # a "not me" report holds: the same answer, no email (otp/not_me.py)
                _WITHHELD.inc()
            return dataclasses.replace(self._accepted, send_id=decision.send_id)
        if decision.slowed:
            log.warning("abuse.subnet_slowed", extra={"subnet": mask_subnet(client.subnet)})
        refusal: ServiceError
        if decision.status is SendStatus.KEY_REUSED:
            refusal = IdempotencyKeyReused()
        elif decision.status is SendStatus.CAPTCHA_REQUIRED:  # blocked or paused: a person passes
            refusal = CaptchaRequired("Show the captcha and send again with captcha_token")
        elif decision.status is SendStatus.PAUSED:
            refusal = SendingPaused(retry_after=decision.retry_after_ms / 1000)
        else:  # counted and logged per interval by code (api/problems.REFUSALS), not a line each
            refusal = _SEND_REJECTIONS[decision.status](retry_after=decision.retry_after_ms / 1000)
        refusal.replayed = decision.replayed
        raise refusal

    async def _idempotency(self, key: str, client: Client, address: str, *body: str | None) -> Idempotency:
        if not _IDEMPOTENCY_KEY.fullmatch(key):
            await self.count_refused(client)
            raise InvalidRequest("Idempotency-Key: 1 to 255 visible ASCII characters")
        return Idempotency(
            key_id=self._crypto.idempotency_id(key, address), fingerprint=self._crypto.fingerprint(*body),
            keep_ms=IDEMPOTENCY_KEEP_MS, lease_ms=IDEMPOTENCY_LEASE_MS,
        )  # fmt: skip

    async def _claim(self, idem: Idempotency, client: Client) -> SendDecision | None:
        """None: this request holds the key, go on. Else the answer to give (a replay), or the
        refusal raised. A request with the same key still being answered is waited for."""
        claim = await self._store.claim(idem, client, self._send_rates)
        deadline = time.monotonic() + idem.lease_ms / 1000
        wait = CLAIM_POLL_FIRST
        while claim.status is ClaimStatus.PENDING:
            if time.monotonic() > deadline:
                raise Unavailable("A request with this Idempotency-Key is still being answered")
            # The first answer usually comes within milliseconds; a repeat that waits longer
            # backs off rather than asking Redis a hundred times a second.
            await asyncio.sleep(wait)
            wait = min(CLAIM_POLL_CAP, wait * 2)
            polled = await self._store.claimed(idem)
            claim = polled if polled is not None else await self._store.claim(idem, client, self._send_rates)
        if claim.status is ClaimStatus.NEW:
            return None
        if claim.status is ClaimStatus.REUSED:
            raise IdempotencyKeyReused()
        assert claim.decision is not None
        return claim.decision

    async def _admit(
        self, raw_email: str, client: Client, captcha_token: str | None
    ) -> tuple[str, Captcha | None]:
        """The checks before the decision, cheapest first: the address (no network), the captcha
        (when on), then whether the domain can receive mail (DNS, when on; not for a test
        recipient, whose domain need not). The address and what the captcha says of the send, or
        a refusal; nothing is stored or counted here."""
        email = self._validator.check(raw_email)
        captcha = None
        if self._captcha is not None:
            if captcha_token is None and self._s.captcha_mode == "adaptive":
                # Optional until the service is under attack; then the widget is shown.
                if await self._store.captcha_needed(self._query(client, None, adaptive=True)):
                    raise CaptchaRequired("Show the captcha and send again with captcha_token")
                captcha = Captcha.MISSING
            else:
                await self._captcha.check(captcha_token, client.ip)
                captcha = Captcha.PASSED
        if self._test and self._test.code_for(email) is not None:
            return email, captcha
        if self._deliverability is not None:
            domain = email.rpartition("@")[2]
            if await self._deliverability.verdict(domain) is Verdict.UNDELIVERABLE:
                raise UndeliverableEmail()
        return email, captcha

    def _failed(self, email: str, test: bool, reason: VerifyFailure) -> None:
        """A refused verify, for the admin stats (in process, never awaited); a test recipient's
        are not counted, as its sends are not."""
        if self._verify_failures is not None and not test:
            self._verify_failures.failed(email, reason)

    async def verify(self, raw_email: str, code: str, client: Client) -> Verified:
        if len(code) != self._s.code_length or not code.isascii() or not code.isdigit():
            raise InvalidRequest(f"code: must be {self._s.code_length} digits")
        try:
            email = normalize_email(raw_email)
        except ServiceError:
            raise InvalidRequest("email: not a valid address") from None
        # The code is the exact address's; the mailbox names its remembered sources (CONTRACT §6).
        mailbox = self._mailboxes.key(email)
        address_id = self._crypto.address_id(email)
        entry = self._test.entry_for(email) if self._test else None
        decision = await self._store.verify(
            VerifyRequest(
                client=client,
                address_id=address_id,
                rates=self._verify_rates,
                code_hash=self._crypto.code_hash(email, code),
                max_attempts=self._s.max_attempts,
                source_id=self._crypto.source_id(mailbox, client.subnet),
                remember_ms=self._s.remember_days * DAY_MS,
                mailbox_id=address_id if mailbox == email else self._crypto.address_id(mailbox),
                test_entry_id=self._crypto.test_entry_id(*entry) if entry is not None else None,
                test_guesses_ms=self._s.code_ttl * 1000,
            )
        )
        match decision.status:
            case VerifyStatus.APPROVED:
                test = entry is not None
                if test:
                    log.info("otp.test_recipient", extra={"email": mask_email(email), "action": "verify"})
                else:
                    log.info("otp.verify_approved", extra={"email": mask_email(email)})
                    if self._sent_to_verified is not None:  # in the background, never awaited
                        self._sent_to_verified.verified(email, self._s.app)
                self._verifies.inc()
                if self._events is not None:  # CONTRACT §7: one XADD, never waits on the receiver
                    event = verified_event(email, decision.send_id)
                    data = {**event, "test": True} if test else event
                    await self._events.publish("otp.verified", data, app=self._s.app)
                if self._tokens is None:
                    return Verified(email, test=test)
                return Verified(email, self._tokens.issue(email, test=test), self._tokens.ttl, test=test)
            case VerifyStatus.INVALID:  # refusals: counted per interval (api/problems.REFUSALS)
                wrong = VerifyFailure.SUPERSEDED if decision.superseded else VerifyFailure.WRONG_CODE
                self._failed(email, entry is not None, wrong)
                raise InvalidCode(decision.attempts_remaining)
            case VerifyStatus.MAX_ATTEMPTS:
                last = VerifyFailure.SUPERSEDED if decision.superseded else VerifyFailure.MAX_ATTEMPTS
                self._failed(email, entry is not None, last)
                raise MaxAttemptsReached()
            case VerifyStatus.EXPIRED:
                self._failed(email, entry is not None, VerifyFailure.EXPIRED)
                raise CodeExpired()
            case VerifyStatus.RATE_LIMITED:
                raise RateLimited(retry_after=decision.retry_after_ms / 1000)

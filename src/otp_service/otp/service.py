"""Send and verify: validate, one store decision, map the outcome to the contract."""

from dataclasses import dataclass

from otp_service.delivery.jobs import JobContent, JobSealer
from otp_service.errors import (
    CodeExpired,
    Cooldown,
    DailyLimit,
    GlobalLimit,
    InvalidCode,
    InvalidRequest,
    MaxAttemptsReached,
    RateLimited,
    SendingPaused,
    ServiceError,
)
from otp_service.limits.throttle import Throttle
from otp_service.logs import get_logger, mask_email
from otp_service.metrics import REQUESTS
from otp_service.otp.codes import CodeCrypto, generate_code
from otp_service.otp.store import (
    SEND_SCOPE,
    VERIFY_SCOPE,
    CodeStore,
    SendRequest,
    SendStatus,
    VerifyRequest,
    VerifyStatus,
)
from otp_service.otp.tokens import TokenIssuer
from otp_service.settings import Settings
from otp_service.validation.address import AddressValidator, normalize_email

log = get_logger("otp")

CHANNEL = "email"

_SENDS = REQUESTS.labels("send")
_VERIFIES = REQUESTS.labels("verify")


@dataclass(frozen=True, slots=True)
class Verified:
    email: str
    token: str | None = None
    token_expires_in: int | None = None


@dataclass(frozen=True, slots=True)
class SendAccepted:
    expires_in: int
    resend_after: int


_SEND_REJECTIONS: dict[SendStatus, type[RateLimited | Cooldown | DailyLimit | GlobalLimit]] = {
    SendStatus.RATE_LIMITED: RateLimited,
    SendStatus.COOLDOWN: Cooldown,
    SendStatus.DAILY_LIMIT: DailyLimit,
    SendStatus.GLOBAL_LIMIT: GlobalLimit,
}


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
    ) -> None:
        self._s = settings
        self._store = store
        self._throttle = throttle
        self._sealer = sealer
        self._validator = validator
        self._crypto = crypto
        self._tokens = tokens
        self._send_rate = settings.rate(SEND_SCOPE)
        self._verify_rate = settings.rate(VERIFY_SCOPE)
        self._global_limit = settings.global_daily_limits.get(CHANNEL, 0)
        self._accepted = SendAccepted(settings.code_ttl, settings.rate_limit_ttl)

    async def send(self, raw_email: str, client: str) -> SendAccepted:
        try:
            email = self._validator.check(raw_email)
        except ServiceError as refused:
            # A refused address still counts against the client's rate: one round trip.
            wait = await self._throttle.hit(SEND_SCOPE, client, self._send_rate)
            if wait:
                raise RateLimited(retry_after=wait / 1000) from None
            raise refused from None
        code = generate_code(self._s.code_length)
        address_id = self._crypto.address_id(email)
        code_hash = self._crypto.code_hash(email, code)
        decision = await self._store.decide_send(
            SendRequest(
                client=client,
                address_id=address_id,
                channel=CHANNEL,
                rate=self._send_rate,
                cooldown_ms=self._s.rate_limit_ttl * 1000,
                daily_limit=self._s.per_account_daily_limit,
                global_limit=self._global_limit,
                code_hash=code_hash,
                code_ttl_ms=self._s.code_ttl * 1000,
                job_payload=self._sealer.seal(JobContent(email, code, address_id, code_hash)),
            )
        )
        if decision.status is SendStatus.OK:
            log.info("otp.send_accepted", extra={"email": mask_email(email), "job": decision.job_id})
            _SENDS.inc()
            return self._accepted
        if decision.status is SendStatus.PAUSED:
            raise SendingPaused(retry_after=decision.retry_after_ms / 1000)
        log.info("otp.send_rejected", extra={"email": mask_email(email), "reason": decision.status})
        raise _SEND_REJECTIONS[decision.status](retry_after=decision.retry_after_ms / 1000)

    async def verify(self, raw_email: str, code: str, client: str) -> Verified:
        if len(code) != self._s.code_length or not code.isascii() or not code.isdigit():
            raise InvalidRequest(f"code: must be {self._s.code_length} digits")
        try:
            email = normalize_email(raw_email)
        except ServiceError:
            raise InvalidRequest("email: not a valid address") from None
        decision = await self._store.verify(
            VerifyRequest(
                client=client,
                address_id=self._crypto.address_id(email),
                rate=self._verify_rate,
                code_hash=self._crypto.code_hash(email, code),
                max_attempts=self._s.max_attempts,
            )
        )
        masked = mask_email(email)
        match decision.status:
            case VerifyStatus.APPROVED:
                log.info("otp.verify_approved", extra={"email": masked})
                _VERIFIES.inc()
                if self._tokens is None:
                    return Verified(email)
                return Verified(email, self._tokens.issue(email), self._tokens.ttl)
            case VerifyStatus.INVALID:
                log.info("otp.verify_wrong_code", extra={"email": masked})
                raise InvalidCode(decision.attempts_remaining)
            case VerifyStatus.MAX_ATTEMPTS:
                log.info("otp.verify_max_attempts", extra={"email": masked})
                raise MaxAttemptsReached()
            case VerifyStatus.EXPIRED:
                raise CodeExpired()
            case VerifyStatus.RATE_LIMITED:
                raise RateLimited(retry_after=decision.retry_after_ms / 1000)

"""The "Didn't ask for this?" link (CONTRACT §4): `<OTP_PUBLIC_URL>/not-me#t=<token>`, made by the
worker for each email it renders. The token names the send (its job), the address it went to and
the client and subnet that requested it, and when it expires; it is sealed (sealing.py) under a
purpose of its own, so that no job, event or code record can be opened as one, or the reverse.
It stands in the fragment, which no browser or link scanner sends to a server: opening the link
reports nothing; the page (api/not_me.py) posts the token when its button is pressed.

The report (NotMeService), accepted once per token, within its 7 days:

- for OTP_NOT_ME_HOURS the exact address receives codes only from its remembered sources: a send
  from anywhere else is answered and counted as any accepted send, and stores and queues nothing
  (otp/lua/_decide.lua, withheld, reads the flag lua/report.lua sets);
- the client that requested the reported send gets one reputation event: a row of its own kind
  matched to that send's delivery, which counts toward the client's block and toward no
  provider's bounce or complaint rate (repository.py);
- `otp.reported` goes out (CONTRACT §7), and otp_not_me_total{event="reported"} counts it.

A bad, expired or reused token is 400 invalid_token and changes nothing. The row is the token's
single use: it is written first, and the Redis flag inside its transaction, so a Redis failure
rolls the row back (the person may press again) and a reused token stops before any write.
"""

import base64
import binascii
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from otp_service.clock import Clock, now_ms
from otp_service.db.engine import database_session
from otp_service.delivery import repository as deliveries
from otp_service.delivery.jobs import JobContent
from otp_service.errors import InvalidToken
from otp_service.events.outbox import EventOutbox
from otp_service.logs import get_logger, mask_email, mask_subnet
from otp_service.metrics import NOT_ME
from otp_service.redisio import RedisClient, RedisKeys, Script, redis_guard
from otp_service.sealing import Sealer

log = get_logger("delivery")

_INVALID = NOT_ME.labels("invalid_token")
_REPORTED = NOT_ME.labels("reported")

TOKEN_DAYS = 7
"""How long a link works (CONTRACT §4: valid 7 days)."""
TOKEN_MS = TOKEN_DAYS * 86_400_000
MAX_TOKEN = 2048
"""A token is ~300 characters (a 254-character address at most, sealed, in base64): anything
longer was not made here."""


@dataclass(frozen=True, slots=True)
class NotMeToken:
    job_id: str
    """The send: the delivery job (its deliveries row, the reputation event's match)."""
    email: str
    address_id: str
    """The exact address's id (otp/codes.py), which keys its "not me" flag as it keys its code."""
    client: str | None
    subnet: str | None
    expires_ms: int
    send_id: str | None = None  # the send's id (CONTRACT §3), which otp.reported names


class InvalidNotMeToken(ValueError):
    """Not a token this service sealed (another key, another purpose, altered, malformed)."""


class NotMeSealer:
    """Tokens as the link carries them: sealed, under an AEAD purpose of their own, in URL-safe
    base64 without padding (the fragment stays one opaque word)."""

    PURPOSE = b"otp-not-me"

    def __init__(self, sealer: Sealer) -> None:
        self._sealer = sealer

    def seal(self, token: NotMeToken) -> str:
        plain = {"j": token.job_id, "e": token.email, "a": token.address_id, "x": str(token.expires_ms)}
        if token.client is not None:
            plain["k"] = token.client
        if token.subnet is not None:
            plain["s"] = token.subnet
        if token.send_id is not None:
            plain["i"] = token.send_id
        sealed = self._sealer.seal(plain, self.PURPOSE)
        return base64.urlsafe_b64encode(base64.b64decode(sealed)).decode().rstrip("=")

    def open(self, text: str) -> NotMeToken:
        """InvalidNotMeToken for anything this service did not seal under this purpose; the
        expiry is the caller's to check (it has the clock)."""
        if not text or len(text) > MAX_TOKEN or not text.isascii():
            raise InvalidNotMeToken("malformed")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            data = self._sealer.open(base64.b64encode(raw), self.PURPOSE)
            return NotMeToken(
                data["j"], data["e"], data["a"], data.get("k"), data.get("s"), int(data["x"]), data.get("i")
            )
        except InvalidTag:  # another key, another purpose, or altered
            raise InvalidNotMeToken("not sealed here") from None
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise InvalidNotMeToken("malformed") from None


class NotMeLinks:
    """The link for one email: a fresh token naming its job, valid TOKEN_DAYS from now."""

    def __init__(self, sealer: NotMeSealer, public_url: str, *, clock: Clock) -> None:
        self._sealer = sealer
        self._base = f"{public_url.rstrip('/')}/not-me#t="
        self._clock = clock

    def link(self, job_id: str, job: JobContent) -> str:
        token = NotMeToken(
            job_id, job.email, job.address_id, job.client, job.subnet, now_ms(self._clock) + TOKEN_MS,
            job.send_id,
        )  # fmt: skip
        return self._base + self._sealer.seal(token)


class ReportStore(Protocol):
    async def report(self, address_id: str, hold_ms: int) -> None:
        """The address receives codes only from its remembered sources for `hold_ms` from now."""
        ...


class RedisReports:
    """The "not me" flag the send decision reads (RedisKeys.reported), on Redis or the embedded
    default's in-process Redis alike."""

    # Durable: the service answers 204 for it (with OTP_REDIS_MIN_REPLICAS, held by the replicas).
    _REPORT = Script(("otp_service.delivery", "report"), durable=True)

    def __init__(self, redis: RedisClient, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys

    async def report(self, address_id: str, hold_ms: int) -> None:
        async with redis_guard("not_me.report"):
            await self._REPORT(self._redis, [self._keys.reported(address_id)], [hold_ms])


class NotMeService:
    def __init__(
        self, *, tokens: NotMeSealer, reports: ReportStore,
        sessions: async_sessionmaker[AsyncSession], hold_hours: int, retention_days: int, clock: Clock,
        events: EventOutbox | None = None,
    ) -> None:  # fmt: skip
        self._tokens = tokens
        self._reports = reports
        self._sessions = sessions
        self._hold_ms = hold_hours * 3_600_000
        # The row that marks a token used is deleted with the other provider events after
        # OTP_RETENTION_DAYS: a token must not outlive the proof of its use.
        self._usable_ms = min(TOKEN_MS, retention_days * 86_400_000)
        self._clock = clock
        self._events = events

    def _open(self, text: str) -> NotMeToken:
        try:
            token = self._tokens.open(text)
        except InvalidNotMeToken:
            raise self._invalid("not_sealed_here") from None
        now = now_ms(self._clock)
        if now >= token.expires_ms or now >= token.expires_ms - TOKEN_MS + self._usable_ms:
            raise self._invalid("expired")
        return token

    @staticmethod
    def _invalid(reason: str) -> InvalidToken:
        _INVALID.inc()
        log.info("otp.not_me_refused", extra={"reason": reason})
        return InvalidToken()

    async def report(self, text: str) -> None:
        token = self._open(text)
        async with database_session(self._sessions, "not_me.report") as session:
            if not await deliveries.record_report(session, token.job_id):
                raise self._invalid("used")
            await self._reports.report(token.address_id, self._hold_ms)
            delivery = await deliveries.delivery_of_job(session, token.job_id)
        _REPORTED.inc()
        log.warning(
            "otp.not_me_reported",
            extra={"email": mask_email(token.email), "job": token.job_id,
                   "subnet": mask_subnet(token.subnet) if token.subnet else None},
        )  # fmt: skip
        if self._events is not None:  # CONTRACT §7: one XADD, never waits on the receiver
            data = {"email": token.email, "job_id": token.job_id,
                    "provider": delivery.provider if delivery is not None else None,
                    "message_id": delivery.provider_message_id if delivery is not None else None,
                    "send_id": token.send_id}  # fmt: skip
            app = delivery.app if delivery is not None else ""
            await self._events.publish("otp.reported", data, event_id=f"{token.job_id}_reported", app=app)

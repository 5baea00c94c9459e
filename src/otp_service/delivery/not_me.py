"""The "Didn't ask for this?" link (CONTRACT §4): `<OTP_PUBLIC_URL>/not-me#t=<token>`, made by the
worker for each email it renders. The token names the send (its job), the address it went to and
the client and subnet that requested it, and when it expires; it is sealed (sealing.py) under a
purpose of its own, so that no job, event or code record can be opened as one, or the reverse.
It stands in the fragment, which no browser or link scanner sends to a server: opening the link
reports nothing; the page posts the token when its button is pressed (otp/not_me.py).
"""

import base64
import binascii
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag

from otp_service.clock import Clock, now_ms
from otp_service.sealing import Sealer

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
    client: str | None
    subnet: str | None
    expires_ms: int


class InvalidNotMeToken(ValueError):
    """Not a token this service sealed (another key, another purpose, altered, malformed)."""


class NotMeSealer:
    """Tokens as the link carries them: sealed, under an AEAD purpose of their own, in URL-safe
    base64 without padding (the fragment stays one opaque word)."""

    PURPOSE = b"otp-not-me"

    def __init__(self, sealer: Sealer) -> None:
        self._sealer = sealer

    def seal(self, token: NotMeToken) -> str:
        plain = {"j": token.job_id, "e": token.email, "x": str(token.expires_ms)}
        if token.client is not None:
            plain["k"] = token.client
        if token.subnet is not None:
            plain["s"] = token.subnet
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
            return NotMeToken(data["j"], data["e"], data.get("k"), data.get("s"), int(data["x"]))
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

    def link(self, job_id: str, email: str, client: str | None, subnet: str | None) -> str:
        token = NotMeToken(job_id, email, client, subnet, now_ms(self._clock) + TOKEN_MS)
        return self._base + self._sealer.seal(token)

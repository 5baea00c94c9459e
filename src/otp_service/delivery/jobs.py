"""A delivery job's content, sealed (sealing.py) so that the queue holds nothing readable.

The job carries the address and code to email, and the address id and code hash that the
worker checks against the address's current code before it calls a provider: a code that a
newer send replaced is never emailed (`delivery.superseded`). The live code kept beside its
hash (OTP_RESEND_STRATEGY=reuse, remembered sources) is the sealed job that sent it.
"""

from dataclasses import dataclass

from otp_service.locales import LOCALES, Locale
from otp_service.sealing import Sealer


@dataclass(frozen=True, slots=True)
class JobContent:
    email: str
    code: str
    address_id: str
    code_hash: str
    locale: Locale = "bilingual"
    subnet: str | None = None  # the requesting client's subnet (§2a)
    client: str | None = None  # the requesting client (§2a): what the reputation guard blames
    send_id: str | None = None  # the send's id (CONTRACT §3): whose status the worker moves
    app: str = ""  # the application (CONTRACT §8) whose email it is; '' the service-wide one


class JobSealer:
    """Jobs as the queue keeps them: sealed, under an AEAD purpose of their own."""

    PURPOSE = b"otp-job"

    def __init__(self, sealer: Sealer) -> None:
        self._sealer = sealer

    def seal(self, job: JobContent) -> bytes:
        plain = {"e": job.email, "c": job.code, "a": job.address_id, "h": job.code_hash, "l": job.locale}
        if job.subnet is not None:
            plain["s"] = job.subnet
        if job.client is not None:
            plain["k"] = job.client
        if job.send_id is not None:
            plain["i"] = job.send_id
        if job.app:
            plain["p"] = job.app
        return self._sealer.seal(plain, self.PURPOSE)

    def open(self, sealed: bytes) -> JobContent:
        """Raises cryptography.exceptions.InvalidTag for a payload sealed with another key."""
        data = self._sealer.open(sealed, self.PURPOSE)
        locale = data["l"]
        if locale not in LOCALES:
            raise ValueError(f"unknown locale {locale!r}")
        return JobContent(
            data["e"], data["c"], data["a"], data["h"], locale, data.get("s"), data.get("k"), data.get("i"),
            data.get("p", ""),
        )  # fmt: skip

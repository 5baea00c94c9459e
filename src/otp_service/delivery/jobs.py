"""A delivery job's content, sealed with AES-GCM so that the queue holds nothing readable.

The job carries the address and code to email, and the address id and code hash that the
worker checks against the address's current code before it calls a provider: a code that a
newer send replaced is never emailed (`delivery.superseded`).
"""

import base64
import json
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from otp_service.keyring import derive_key
from otp_service.locales import LOCALES, Locale

_COMPACT = json.JSONEncoder(separators=(",", ":"))
"""json.dumps with non-default separators builds a new encoder per call."""


@dataclass(frozen=True, slots=True)
class JobContent:
    email: str
    code: str
    address_id: str
    code_hash: str
    locale: Locale = "bilingual"
    subnet: str | None = None  # the requesting client's subnet (§2a)


@dataclass(frozen=True, slots=True)
class SealedCode:
    """A live code kept for OTP_RESEND_STRATEGY=reuse, next to its hash in the code store."""

    code: str
    code_hash: str


class JobSealer:
    def __init__(self, secret: bytes) -> None:
        self._aead = AESGCM(derive_key(secret, "job-seal"))

    def seal_fields(self, plain: dict[str, str], purpose: bytes) -> bytes:
        """Any string fields, under an AEAD purpose of their own (events out use b"otp-event")."""
        return self._seal(plain, purpose)

    def open_fields(self, sealed: bytes, purpose: bytes) -> dict[str, str]:
        return self._open(sealed, purpose)

    def _seal(self, plain: dict[str, str], purpose: bytes) -> bytes:
        # 96 random bits per job: every process seals under the same key, so a per-process
        # counter with a 32-bit random prefix could repeat a nonce across processes (a birthday
        # bound of ~65,000 processes); random nonces stay safe for 2^32 jobs per key (NIST SP
        # 800-38D, 8.3).
        nonce = os.urandom(12)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, _COMPACT.encode(plain).encode(), purpose))

    def _open(self, sealed: bytes, purpose: bytes) -> dict[str, str]:
        raw = base64.b64decode(sealed)
        data: dict[str, str] = json.loads(self._aead.decrypt(raw[:12], raw[12:], purpose))
        return data

    def seal(self, job: JobContent) -> bytes:
        plain = {"e": job.email, "c": job.code, "a": job.address_id, "h": job.code_hash, "l": job.locale}
        if job.subnet is not None:
            plain["s"] = job.subnet
        return self._seal(plain, b"otp-job")

    def open(self, sealed: bytes) -> JobContent:
        """Raises cryptography.exceptions.InvalidTag for a payload sealed with another key."""
        data = self._open(sealed, b"otp-job")
        locale = data.get("l", "bilingual")  # jobs queued before the locale travelled
        if locale not in LOCALES:
            raise ValueError(f"unknown locale {locale!r}")
        return JobContent(data["e"], data["c"], data["a"], data["h"], locale, data.get("s"))

    def seal_code(self, code: SealedCode) -> bytes:
        """A different purpose (AEAD associated data) from jobs: neither opens as the other."""
        return self._seal({"c": code.code, "h": code.code_hash}, b"otp-code")

    def open_code(self, sealed: bytes) -> SealedCode:
        data = self._open(sealed, b"otp-code")
        return SealedCode(data["c"], data["h"])

"""Sealing: AES-GCM under the key derived for it from OTP_SECRET_KEY, so that Redis holds nothing
readable (delivery jobs, the live code kept beside its hash, events out). Each kind of record is
sealed under a purpose of its own (the AEAD's associated data: b"otp-job", b"otp-event"), so
that none can be opened as another. Here, below delivery and events, so both can import it."""

import base64
import json
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from otp_service.keyring import derive_key

_COMPACT = json.JSONEncoder(separators=(",", ":"))
"""json.dumps with non-default separators builds a new encoder per call."""


class Sealer:
    def __init__(self, secret: bytes) -> None:
        self._aead = AESGCM(derive_key(secret, "job-seal"))

    def seal(self, plain: dict[str, str], purpose: bytes) -> bytes:
        # 96 random bits per record: every process seals under the same key, so a per-process
        # counter with a 32-bit random prefix could repeat a nonce across processes (a birthday
        # bound of ~65,000 processes); random nonces stay safe for 2^32 records per key (NIST SP
        # 800-38D, 8.3).
        nonce = os.urandom(12)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, _COMPACT.encode(plain).encode(), purpose))

    def open(self, sealed: bytes, purpose: bytes) -> dict[str, str]:
        """Raises cryptography.exceptions.InvalidTag for a record sealed under another key or
        another purpose."""
        raw = base64.b64decode(sealed)
        data: dict[str, str] = json.loads(self._aead.decrypt(raw[:12], raw[12:], purpose))
        return data

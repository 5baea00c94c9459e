"""Codes, their keyed hashes, and the sealed job payload.

Three keys are derived from OTP_SECRET_KEY so that no one of them can stand in for another:
the code hash key (HMAC-SHA256 of address and code), the address id key (Redis keys carry a
keyed hash, not the address), and the job key (AES-GCM over the queued address and code, so the
delivery queue holds nothing readable).
"""

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_COMPACT = json.JSONEncoder(separators=(",", ":"))
"""json.dumps with non-default separators builds a new encoder per call."""


def _derive(secret: bytes, purpose: str) -> bytes:
    return hmac.new(secret, f"otp-service/{purpose}/v1".encode(), hashlib.sha256).digest()


def generate_code(length: int) -> str:
    return f"{secrets.randbelow(10**length):0{length}d}"


@dataclass(frozen=True, slots=True)
class SealedJob:
    email: str
    code: str


class CodeCrypto:
    def __init__(self, secret: bytes) -> None:
        self._hash_key = _derive(secret, "code-hash")
        self._id_key = _derive(secret, "address-id")
        self._aead = AESGCM(_derive(secret, "job-seal"))

    # hmac.digest is the one-shot C path: no HMAC object per call.
    def code_hash(self, email: str, code: str) -> str:
        return hmac.digest(self._hash_key, f"{email}\0{code}".encode(), "sha256").hex()

    def address_id(self, email: str) -> str:
        return hmac.digest(self._id_key, email.encode(), "sha256").hex()[:32]

    def seal(self, email: str, code: str) -> bytes:
        nonce = os.urandom(12)
        plain = _COMPACT.encode({"e": email, "c": code}).encode()
        return base64.b64encode(nonce + self._aead.encrypt(nonce, plain, b"otp-job"))

    def open(self, sealed: bytes) -> SealedJob:
        """Raises cryptography.exceptions.InvalidTag for a payload sealed with another key."""
        raw = base64.b64decode(sealed)
        data = json.loads(self._aead.decrypt(raw[:12], raw[12:], b"otp-job"))
        return SealedJob(email=data["e"], code=data["c"])

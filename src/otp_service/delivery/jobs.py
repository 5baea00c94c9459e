"""A delivery job's content, sealed with AES-GCM so that the queue holds nothing readable.

The job carries the address and code to email, and the address id and code hash that the
worker checks against the address's current code before it calls a provider: a code that a
newer send replaced is never emailed (`delivery.superseded`).
"""

import base64
import itertools
import json
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from otp_service.keyring import derive_key

_COMPACT = json.JSONEncoder(separators=(",", ":"))
"""json.dumps with non-default separators builds a new encoder per call."""


@dataclass(frozen=True, slots=True)
class JobContent:
    email: str
    code: str
    address_id: str
    code_hash: str


class JobSealer:
    def __init__(self, secret: bytes) -> None:
        self._aead = AESGCM(derive_key(secret, "job-seal"))
        # 96-bit nonces from a random 32-bit field per sealer and a 64-bit counter: NIST SP
        # 800-38D's deterministic construction, unique per key without a syscall per job.
        self._fixed = os.urandom(4)
        self._counter = itertools.count(1)

    def seal(self, job: JobContent) -> bytes:
        nonce = self._fixed + next(self._counter).to_bytes(8, "big")
        plain = _COMPACT.encode({"e": job.email, "c": job.code, "a": job.address_id, "h": job.code_hash})
        return base64.b64encode(nonce + self._aead.encrypt(nonce, plain.encode(), b"otp-job"))

    def open(self, sealed: bytes) -> JobContent:
        """Raises cryptography.exceptions.InvalidTag for a payload sealed with another key."""
        raw = base64.b64decode(sealed)
        data = json.loads(self._aead.decrypt(raw[:12], raw[12:], b"otp-job"))
        return JobContent(email=data["e"], code=data["c"], address_id=data["a"], code_hash=data["h"])

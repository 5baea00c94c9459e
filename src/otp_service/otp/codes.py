"""Codes and their keyed hashes.

Two keys are derived from OTP_SECRET_KEY (keyring.py) so that neither can stand in for the
other: the code hash key (HMAC-SHA256 of address and code: only this hash is stored) and the
address id key (Redis keys carry a keyed hash of the address, not the address). The queued job
is sealed under a third (delivery/jobs.py).
"""

import hmac
import json
import secrets

from otp_service.keyring import derive_key


def generate_code(length: int) -> str:
    return f"{secrets.randbelow(10**length):0{length}d}"


class CodeCrypto:
    def __init__(self, secret: bytes, app: str = "") -> None:
        """`app`: the application (CONTRACT §8) whose codes and budgets these ids name. Each
        application derives keys of its own, so every id built from an address (its code, cooldown,
        daily cap, remembered sources, Idempotency-Keys, "not me" report) is the application's
        alone, and the Lua scripts and RedisKeys need not know applications. What is shared is
        keyed by the service's key: a recipient domain's budget (domain_id), and the guesses at a
        test recipient's fixed code (test_entry_id)."""
        scope = f"/app/{app}" if app else ""
        self._hash_key = derive_key(secret, f"code-hash{scope}")
        self._id_key = derive_key(secret, f"address-id{scope}")
        self._service_key = derive_key(secret, "address-id")

    # hmac.digest is the one-shot C path: no HMAC object per call.
    def code_hash(self, email: str, code: str) -> str:
        return hmac.digest(self._hash_key, f"{email}\0{code}".encode(), "sha256").hex()

    def address_id(self, email: str) -> str:
        return hmac.digest(self._id_key, email.encode(), "sha256").hex()[:32]

    def source_id(self, mailbox: str, subnet: str) -> str:
        """A (mailbox, client subnet) pair as a remembered source: keyed, so Redis holds neither."""
        return hmac.digest(self._id_key, f"source\0{mailbox}\0{subnet}".encode(), "sha256").hex()[:32]

    def domain_id(self, domain: str) -> str:
        return hmac.digest(self._service_key, f"domain\0{domain}".encode(), "sha256").hex()[:32]

    def test_entry_id(self, entry: str, code: str) -> str:
        """A test recipient entry's wrong-guess counter (CONTRACT §3): the service's, not the
        application's, so that every application serving the same entry with the same fixed code
        counts guesses at it together (at most OTP_MAX_ATTEMPTS a lifetime, not that many per
        application)."""
        return hmac.digest(self._service_key, f"test\0{entry}\0{code}".encode(), "sha256").hex()[:32]

    def idempotency_id(self, key: str, address: str) -> str:
        """A send's Idempotency-Key as Redis holds it: keyed, so the store never holds the key,
        and scoped to the address it was sent for, so a key predicted and sent first for another
        address cannot take this one's (CONTRACT §3)."""
        scoped = f"idempotency\0{key}\0{address.strip().lower()}"
        return hmac.digest(self._id_key, scoped.encode(), "sha256").hex()[:32]

    def fingerprint(self, *fields: str | None) -> str:
        """A request body's fingerprint: equal exactly when every field is."""
        canonical = json.dumps(fields, ensure_ascii=False)
        return hmac.digest(self._hash_key, canonical.encode(), "sha256").hex()[:32]

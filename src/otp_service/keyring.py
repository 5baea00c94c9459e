"""Keys derived from OTP_SECRET_KEY, one per purpose, so that no one of them can stand in for
another (code hashes, address ids, sealed delivery jobs)."""

import hashlib
import hmac


def derive_key(secret: bytes, purpose: str) -> bytes:
    return hmac.new(secret, f"otp-service/{purpose}/v1".encode(), hashlib.sha256).digest()

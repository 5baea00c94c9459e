"""Keys: those derived from OTP_SECRET_KEY, one per purpose, so that no one of them can stand in
for another (code hashes, address ids, sealed delivery jobs); and the verification tokens'
signing key (OTP_JWT_PRIVATE_KEY), parsed once and shared by the settings' check and the issuer."""

import base64
import hashlib
import hmac
from dataclasses import dataclass
from functools import cache

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519


def derive_key(secret: bytes, purpose: str) -> bytes:
    return hmac.new(secret, f"otp-service/{purpose}/v1".encode(), hashlib.sha256).digest()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass(frozen=True, slots=True)
class SigningKey:
    key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
    algorithm: str  # EdDSA | ES256
    public_jwk: dict[str, str]


@cache
def load_signing_key(private_pem: str) -> SigningKey:
    """An Ed25519 (EdDSA) or ECDSA P-256 (ES256) private key; ValueError for anything else.
    Parsed once per process (cached by its PEM): the settings check it at start-up and the
    token issuer uses the same parsed key."""
    try:
        key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"OTP_JWT_PRIVATE_KEY is not a PEM private key: {exc}") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return SigningKey(key, "EdDSA", {"crv": "Ed25519", "kty": "OKP", "x": b64url(raw)})
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        numbers = key.public_key().public_numbers()
        public = {"crv": "P-256", "kty": "EC", "x": b64url(numbers.x.to_bytes(32, "big")),
                  "y": b64url(numbers.y.to_bytes(32, "big"))}  # fmt: skip
        return SigningKey(key, "ES256", public)
    raise ValueError("OTP_JWT_PRIVATE_KEY must be an Ed25519 or ECDSA P-256 key")

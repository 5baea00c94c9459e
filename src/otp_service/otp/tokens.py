"""Verification tokens for the sidecar pattern: after a successful verify, a short-lived JWT
another service can check against our JWKS without calling back.

Keys: Ed25519 (alg EdDSA) or ECDSA P-256 (alg ES256), PEM in OTP_JWT_PRIVATE_KEY. The key id is
the RFC 7638 thumbprint of the public JWK, so a rotated key gets a new `kid`.
"""

import base64
import hashlib
import json
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class TokenKeyError(ValueError):
    pass


class TokenIssuer:
    def __init__(self, private_pem: str, *, issuer: str, audience: str, ttl: int) -> None:
        try:
            key = serialization.load_pem_private_key(private_pem.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise TokenKeyError(f"OTP_JWT_PRIVATE_KEY is not a PEM private key: {exc}") from None
        public: dict[str, str]
        if isinstance(key, ed25519.Ed25519PrivateKey):
            self.algorithm = "EdDSA"
            raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            public = {"crv": "Ed25519", "kty": "OKP", "x": _b64(raw)}
        elif isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            self.algorithm = "ES256"
            numbers = key.public_key().public_numbers()
            public = {"crv": "P-256", "kty": "EC", "x": _b64(numbers.x.to_bytes(32, "big")),
                      "y": _b64(numbers.y.to_bytes(32, "big"))}  # fmt: skip
        else:
            raise TokenKeyError("OTP_JWT_PRIVATE_KEY must be an Ed25519 or ECDSA P-256 key")
        self._key = key
        canonical = json.dumps(public, sort_keys=True, separators=(",", ":")).encode()
        self.kid = _b64(hashlib.sha256(canonical).digest())
        self.jwk = {**public, "kid": self.kid, "alg": self.algorithm, "use": "sig"}
        self._issuer = issuer
        self._audience = audience
        self.ttl = ttl

    def issue(self, email: str, *, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "sub": email,
            "aud": self._audience,
            "iat": issued,
            "exp": issued + self.ttl,
            "jti": uuid.uuid4().hex,
            "email_verified": True,
        }
        return jwt.encode(claims, self._key, algorithm=self.algorithm, headers={"kid": self.kid})

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [self.jwk]}

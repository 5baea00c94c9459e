"""Verification tokens for the sidecar pattern: after a successful verify, a short-lived JWT
another service can check against our JWKS without calling back.

Keys: Ed25519 (alg EdDSA) or ECDSA P-256 (alg ES256), PEM in OTP_JWT_PRIVATE_KEY. The key id is
the RFC 7638 thumbprint of the public JWK, so a rotated key gets a new `kid`.
"""

import hashlib
import json
import uuid
from typing import Any

import jwt

from otp_service.clock import Clock, system_clock
from otp_service.keyring import b64url, load_signing_key


class TokenIssuer:
    def __init__(
        self, private_pem: str, *, issuer: str, audience: str, ttl: int, clock: Clock = system_clock,
        app: str = "",
    ) -> None:  # fmt: skip
        """`app`: the application (CONTRACT §8) whose verifies the tokens attest, as claim `app`
        beside `aud` (two applications may share an audience by falling back to OTP_JWT_AUDIENCE;
        the claim still tells them apart). '' (the service-wide one): no claim."""
        signing = load_signing_key(private_pem)
        self._key = signing.key
        self.algorithm = signing.algorithm
        canonical = json.dumps(signing.public_jwk, sort_keys=True, separators=(",", ":")).encode()
        self.kid = b64url(hashlib.sha256(canonical).digest())
        self.jwk = {**signing.public_jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}
        self._issuer = issuer
        self._audience = audience
        self._clock = clock
        self.ttl = ttl
        self._app = app

    def issue(self, email: str, *, test: bool = False) -> str:
        """A token for a verified address; `test`: a test recipient's (claim `"test": true`)."""
        issued = int(self._clock())
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "sub": email,
            "aud": self._audience,
            "iat": issued,
            "exp": issued + self.ttl,
            "jti": uuid.uuid4().hex,
            "email_verified": True,
        }
        if test:
            claims["test"] = True
        if self._app:
            claims["app"] = self._app
        return jwt.encode(claims, self._key, algorithm=self.algorithm, headers={"kid": self.kid})

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [self.jwk]}

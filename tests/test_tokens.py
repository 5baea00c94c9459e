"""Verification tokens, checked the way another service would: PyJWT and the published JWKS."""

from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from otp_service.settings import Settings, SettingsError, load_settings
from tests.support import console_emails, drain, unique_email


def pem(key: Any) -> str:
    return str(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode())  # fmt: skip


@pytest.mark.parametrize(("key", "alg"), [(ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
                                          (ec.generate_private_key(ec.SECP256R1()), "ES256")])  # fmt: skip
async def test_verify_returns_a_token_checkable_with_the_jwks(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str],
    key: Any, alg: str,
) -> None:  # fmt: skip
    settings = make_settings(jwt_private_key=pem(key), jwt_audience="billing-service", jwt_ttl=120,
                             conversion_min_sends=1_000_000, throttle_rates={"otp_send": "100/minute", "otp_verify": "100/minute", "otp_send_subnet": "100/minute", "otp_verify_subnet": "100/minute"})  # fmt: skip
    email = unique_email()
    async with open_app(settings) as app:
        await app.http.post("/api/v1/auth/otp/send", json={"email": email})
        await drain(app)
        [sent] = console_emails(capsys.readouterr().out)
        body = (
            await app.http.post("/api/v1/auth/otp/verify", json={"email": email, "code": sent.code})
        ).json()
        jwks = (await app.http.get("/.well-known/jwks.json")).json()
    assert (body["status"], body["email"], body["token_type"], body["expires_in"]) == (
        "approved",
        email,
        "Bearer",
        120,
    )
    [jwk] = jwks["keys"]
    assert jwk["alg"] == alg
    header = jwt.get_unverified_header(body["token"])
    assert header["kid"] == jwk["kid"]
    claims = jwt.decode(body["token"], jwt.PyJWK(jwk).key, algorithms=[alg], audience="billing-service")
    assert claims["sub"] == email
    assert claims["exp"] - claims["iat"] == 120
    assert claims["jti"]
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(body["token"], jwt.PyJWK(jwk).key, algorithms=[alg], audience="someone-else")
    other = (
        ed25519.Ed25519PrivateKey.generate().public_key()
        if alg == "EdDSA"
        else ec.generate_private_key(ec.SECP256R1()).public_key()
    )
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(body["token"], other, algorithms=[alg], audience="billing-service")


async def test_without_a_key_there_is_no_token_and_an_empty_jwks(client: Any) -> None:
    assert (await client.http.get("/.well-known/jwks.json")).json() == {"keys": []}


def test_unsupported_or_broken_keys_are_refused_at_start() -> None:
    with pytest.raises(SettingsError, match="Ed25519 or ECDSA P-256"):
        load_settings(jwt_private_key=pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    with pytest.raises(SettingsError, match="not a PEM private key"):
        load_settings(jwt_private_key="-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")

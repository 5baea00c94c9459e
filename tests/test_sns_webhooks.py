"""SES events over SNS, genuinely signed: an RSA key and certificate made here, the certificate
served at an allowed SNS host through the service's own httpx client (respx at the transport)."""

import base64
import json
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import text

from otp_service.settings import Settings
from otp_service.webhooks.sns import canonical_string
from tests.support import unique_email

URL = "/api/v1/auth/ses-events/"
TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-events"
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem"
SUBSCRIBE_URL = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=x&Token=abc"


def make_key_and_cert(common_name: str = "sns.amazonaws.com") -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30)).sign(key, hashes.SHA256())
    )  # fmt: skip
    return key, cert.public_bytes(serialization.Encoding.PEM)


KEY, CERT_PEM = make_key_and_cert()
OTHER_KEY, _ = make_key_and_cert()


def sign(message: dict[str, Any], *, key: rsa.RSAPrivateKey = KEY, version: str = "1") -> dict[str, Any]:
    message = {**message, "SignatureVersion": version}
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 - SNS v1 is SHA1withRSA
    signature = key.sign(canonical_string(message), padding.PKCS1v15(), algorithm)
    return {**message, "Signature": base64.b64encode(signature).decode()}


def sns_time(delta: timedelta = timedelta()) -> str:
    return (datetime.now(UTC) + delta).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def notification(ses: dict[str, Any] | str, **overrides: Any) -> dict[str, Any]:
    base = {
        "Type": "Notification",
        "MessageId": f"{secrets.token_hex(8)}-sns",
        "TopicArn": TOPIC,
        "Message": ses if isinstance(ses, str) else json.dumps(ses),
        "Timestamp": sns_time(),
        "SigningCertURL": CERT_URL,
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    }
    return {**base, **overrides}


def confirmation(kind: str = "SubscriptionConfirmation", **overrides: Any) -> dict[str, Any]:
    base = {
        "Type": kind,
        "MessageId": f"{secrets.token_hex(8)}-sub",
        "Token": "abc",
        "TopicArn": TOPIC,
        "Message": "You have chosen to subscribe to the topic.",
        "SubscribeURL": SUBSCRIBE_URL,
        "Timestamp": sns_time(),
        "SigningCertURL": CERT_URL,
    }
    return {**base, **overrides}


def bounce(bounce_type: str, *recipients: dict[str, Any], key: str = "notificationType") -> dict[str, Any]:
    return {
        key: "Bounce",
        "bounce": {"bounceType": bounce_type, "bounceSubType": "General", "bouncedRecipients": list(recipients),
                   "timestamp": "2026-11-22T10:00:00.000Z", "feedbackId": "f"},
        "mail": {"messageId": "ses-msg-1", "destination": [r["emailAddress"] for r in recipients]},
    }  # fmt: skip


def complaint(*emails: str, key: str = "notificationType") -> dict[str, Any]:
    return {
        key: "Complaint",
        "complaint": {"complainedRecipients": [{"emailAddress": e} for e in emails],
                      "complaintFeedbackType": "abuse", "timestamp": "2026-11-22T10:00:00.000Z"},
        "mail": {"messageId": "ses-msg-2"},
    }  # fmt: skip


@pytest.fixture
def aws() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mock:
        mock.get(CERT_URL, name="cert").mock(return_value=httpx.Response(200, content=CERT_PEM))
        mock.get(SUBSCRIBE_URL, name="subscribe").mock(return_value=httpx.Response(200, text="<ok/>"))
        yield mock


@pytest.fixture
async def app(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], aws: respx.MockRouter
) -> AsyncIterator[Any]:
    async with open_app(make_settings(sns_topic_arns=[TOPIC], worker_enabled=False)) as client:
        yield client


async def post(app: Any, message: dict[str, Any], header: str | None = "auto") -> httpx.Response:
    headers = {"content-type": "text/plain; charset=UTF-8"}
    if header == "auto":
        headers["x-amz-sns-message-type"] = str(message.get("Type"))
    elif header is not None:
        headers["x-amz-sns-message-type"] = header
    result: httpx.Response = await app.http.post(URL, content=json.dumps(message).encode(), headers=headers)
    return result


async def counts(app: Any) -> tuple[int, int]:
    async with app.db.connect() as conn:
        events = await conn.scalar(text("SELECT count(*) FROM webhook_events"))
        rows = await conn.scalar(text("SELECT count(*) FROM suppressions"))
    return int(events or 0), int(rows or 0)


async def suppressed(app: Any, email: str) -> str | None:
    async with app.db.connect() as conn:
        reason = await conn.scalar(text("SELECT reason FROM suppressions WHERE email = :e"), {"e": email})
    return str(reason) if reason is not None else None


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("key", ["notificationType", "eventType"])
async def test_permanent_bounce_suppresses_hard_bounced_recipients(app: Any, version: str, key: str) -> None:
    hard, no_status, soft = unique_email(), unique_email(), unique_email()
    ses = bounce("Permanent", {"emailAddress": hard, "status": "5.1.1", "action": "failed"},
                 {"emailAddress": no_status}, {"emailAddress": soft, "status": "4.4.7"}, key=key)  # fmt: skip
    res = await post(app, sign(notification(ses), version=version))
    assert (res.status_code, res.json()) == (200, {"status": "accepted"})
    assert await suppressed(app, hard) == "bounce"
    assert await suppressed(app, no_status) == "bounce"
    assert await suppressed(app, soft) is None


@pytest.mark.parametrize("bounce_type", ["Transient", "Undetermined"])
async def test_transient_and_undetermined_bounces_are_recorded_not_suppressed(
    app: Any, bounce_type: str
) -> None:
    email = unique_email()
    before = await counts(app)
    res = await post(app, sign(notification(bounce(bounce_type, {"emailAddress": email, "status": "5.0.0"}))))
    assert res.status_code == 200
    assert await suppressed(app, email) is None
    assert await counts(app) == (before[0] + 1, before[1])


@pytest.mark.parametrize("key", ["notificationType", "eventType"])
async def test_complaint_suppresses(app: Any, key: str) -> None:
    email = unique_email()
    assert (await post(app, sign(notification(complaint(email, key=key)), version="2"))).status_code == 200
    assert await suppressed(app, email) == "complaint"


async def test_topic_validation_text_is_ignored(app: Any) -> None:
    before = await counts(app)
    message = sign(notification("Successfully validated SNS topic for Amazon SES event publishing."))
    assert (await post(app, message)).status_code == 200
    assert await counts(app) == (before[0] + 1, before[1])


async def test_repeated_message_id_is_processed_once(app: Any) -> None:
    email = unique_email()
    message = sign(notification(complaint(email)))
    assert (await post(app, message)).json() == {"status": "accepted"}
    before = await counts(app)
    assert (await post(app, message)).json() == {"status": "duplicate"}
    assert await counts(app) == before


async def test_subscription_confirmation_visits_its_url_exactly_once(app: Any, aws: respx.MockRouter) -> None:
    message = sign(confirmation())
    assert (await post(app, message)).json() == {"status": "accepted"}
    assert (await post(app, message)).json() == {"status": "duplicate"}
    assert aws["subscribe"].call_count == 1


async def test_forged_subscription_confirmation_is_never_visited(app: Any, aws: respx.MockRouter) -> None:
    forged = sign(confirmation(), key=OTHER_KEY)
    assert (await post(app, forged)).status_code == 400
    evil = sign(confirmation(SubscribeURL="https://evil.example/?Action=ConfirmSubscription"))
    assert (await post(app, evil)).status_code == 400
    assert aws["subscribe"].call_count == 0


async def test_unsubscribe_confirmation_is_verified_but_never_visited(
    app: Any, aws: respx.MockRouter
) -> None:
    res = await post(app, sign(confirmation("UnsubscribeConfirmation")))
    assert res.status_code == 200
    assert aws["subscribe"].call_count == 0


async def test_failed_certificate_fetch_is_not_cached(app: Any, aws: respx.MockRouter) -> None:
    email = unique_email()
    aws["cert"].mock(return_value=httpx.Response(503))
    assert (await post(app, sign(notification(complaint(email))))).status_code == 400
    # The failure was not remembered as a pass: a forged message still fails...
    aws["cert"].mock(side_effect=httpx.ConnectError("down"))
    assert (await post(app, sign(notification(complaint(email)), key=OTHER_KEY))).status_code == 400
    # ...nor as a permanent failure: once the certificate is reachable, the real one passes.
    aws["cert"].mock(return_value=httpx.Response(200, content=CERT_PEM))
    assert (await post(app, sign(notification(complaint(email))))).status_code == 200
    assert await suppressed(app, email) == "complaint"


def _resigned(**overrides: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda m: sign({**m, **overrides})


def _cases() -> list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]], str | None]]:
    def body_changed(m: dict[str, Any]) -> dict[str, Any]:
        return {**m, "Message": m["Message"].replace("Complaint", "Bounce")}

    def other_message_signature(m: dict[str, Any]) -> dict[str, Any]:
        other = sign(notification(complaint("someone@example.org")))
        return {**m, "Signature": other["Signature"]}

    return [
        ("body changed", body_changed, "auto"),
        ("wrong key", lambda m: sign(m, key=OTHER_KEY), "auto"),
        ("signature of another message", other_message_signature, "auto"),
        ("stale timestamp", _resigned(Timestamp=sns_time(-timedelta(hours=2))), "auto"),
        ("future timestamp", _resigned(Timestamp=sns_time(timedelta(hours=2))), "auto"),
        ("http cert url", _resigned(SigningCertURL=CERT_URL.replace("https:", "http:")), "auto"),
        (
            "suffix host",
            _resigned(SigningCertURL="https://sns.us-east-1.amazonaws.com.evil.com/c.pem"),
            "auto",
        ),
        (
            "host in path",
            _resigned(SigningCertURL="https://evil.com/sns.us-east-1.amazonaws.com/c.pem"),
            "auto",
        ),
        ("s3 bucket host", _resigned(SigningCertURL="https://sns-certs.s3.amazonaws.com/c.pem"), "auto"),
        # An S3 bucket named like SNS: the old pattern's `[a-z0-9-]+` admitted it.
        ("sns.s3 host", _resigned(SigningCertURL="https://sns.s3.amazonaws.com/c.pem"), "auto"),
        ("userinfo", _resigned(SigningCertURL="https://sns.us-east-1.amazonaws.com@evil.com/c.pem"), "auto"),
        ("userinfo 2", _resigned(SigningCertURL="https://user:pw@sns.us-east-1.amazonaws.com/c.pem"), "auto"),
        ("not pem", _resigned(SigningCertURL="https://sns.us-east-1.amazonaws.com/c.crt"), "auto"),
        ("query", _resigned(SigningCertURL=CERT_URL + "?x=1"), "auto"),
        ("odd port", _resigned(SigningCertURL="https://sns.us-east-1.amazonaws.com:8443/c.pem"), "auto"),
        ("unknown topic", _resigned(TopicArn="arn:aws:sns:us-east-1:999999999999:other"), "auto"),
        ("signature version 3", lambda m: {**m, "SignatureVersion": "3"}, "auto"),
        ("no signature", lambda m: {k: v for k, v in m.items() if k != "Signature"}, "auto"),
        ("signature not base64", lambda m: {**m, "Signature": "%%%"}, "auto"),
        ("header type mismatch", lambda m: m, "SubscriptionConfirmation"),
        ("unknown type", lambda m: {**m, "Type": "Surprise"}, None),
    ]


@pytest.mark.parametrize(("name", "tamper", "header"), _cases(), ids=[c[0] for c in _cases()])
async def test_tampered_messages_are_4xx_write_nothing_visit_nothing(
    app: Any, aws: respx.MockRouter, name: str, tamper: Any, header: str | None
) -> None:
    before = await counts(app)
    message = tamper(sign(notification(complaint(unique_email()))))
    res = await post(app, message, header)
    assert 400 <= res.status_code < 500, name
    assert res.json()["code"] == "webhook_rejected"
    assert await counts(app) == before
    assert aws["subscribe"].call_count == 0
    if "cert url" in name or "host" in name or "userinfo" in name or name in ("not pem", "query", "odd port"):
        assert aws["cert"].call_count == 0


@pytest.mark.parametrize("body", [b"not json", b"[]", b"{}", b'{"Type": "Notification"}'])
async def test_malformed_bodies_are_400(app: Any, body: bytes) -> None:
    res = await app.http.post(URL, content=body, headers={"content-type": "text/plain"})
    assert res.status_code == 400


async def test_a_certificate_issued_to_someone_else_is_refused(app: Any, aws: respx.MockRouter) -> None:
    """The host passed the pattern, the signature matches the certificate's key, but the
    certificate is not issued to SNS: refused, nothing written."""
    key, pem = make_key_and_cert("evil.example")
    aws.get(CERT_URL).mock(return_value=httpx.Response(200, content=pem))
    before = await counts(app)
    res = await post(app, sign(notification(complaint(unique_email())), key=key))
    assert res.status_code == 400
    assert res.json()["reason"] == "bad_certificate"
    assert await counts(app) == before

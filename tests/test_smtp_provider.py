"""OTP_EMAIL_PROVIDER=smtp against a real SMTP server on loopback (aiosmtpd): STARTTLS with a test
certificate the client is told to trust (SSL_CERT_FILE), AUTH, implicit TLS, a 4xx then success,
a 5xx, and a server that offers no STARTTLS. Through the provider, and through the HTTP API on
Redis and PostgreSQL and on the embedded default."""

import asyncio
import ipaddress
import logging
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import text

from otp_service.delivery.providers.base import OutgoingEmail, PermanentError, RetryableError
from otp_service.delivery.providers.smtp import SmtpProvider
from otp_service.delivery.templates import HEADERS
from otp_service.logs import JsonFormatter
from otp_service.settings import Settings, SettingsError, load_settings
from tests.support import drain, free_port, unique_email

USER, PASSWORD = "otp-sender", "s3cret pass"
CODE_LINE = "Your verification code is: "


@dataclass
class Mailbox:
    """What the server received, and the replies it gives to the next DATA commands."""

    messages: list[EmailMessage] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)  # consumed first; then "250 OK"
    logins: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if self.replies:
            return self.replies.pop(0)
        raw = envelope.original_content or b""
        self.messages.append(message_from_bytes(raw, policy=policy.default))
        return "250 OK"

    def authenticate(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            USER.encode(),
            PASSWORD.encode(),
        )
        if ok:
            self.logins.append(mechanism)
        return AuthResult(success=ok, handled=False)  # unhandled: the server answers 535 itself

    def code_for(self, to: str) -> str:
        [message] = [m for m in self.messages if m["To"] == to]
        body = message.get_body(("plain",))
        assert body is not None
        content = body.get_content()
        return str(content.split(CODE_LINE, 1)[1][:6])


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("smtp-tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


def trusting(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


@pytest.fixture
def starttls_server(certificate: tuple[Path, Path]) -> Iterator[tuple[Mailbox, int]]:
    """Port 587 style: plain connect, STARTTLS required before AUTH and MAIL."""
    box = Mailbox()
    port = free_port()
    controller = Controller(
        box, hostname="127.0.0.1", port=port, tls_context=server_tls(certificate), require_starttls=True,
        authenticator=box.authenticate, auth_required=True, auth_require_tls=True,
    )  # fmt: skip
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


@pytest.fixture
def plain_server() -> Iterator[tuple[Mailbox, int]]:
    """No TLS offered at all (Mailpit, a local Postfix)."""
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


def outgoing(to: str) -> OutgoingEmail:
    return OutgoingEmail(
        to=to, sender="OTP Service <noreply@example.com>", subject="OTP Service verification code / 验证码",
        text=f"{CODE_LINE}424242\n您的验证码是：424242\n", html="<p>424242 验证码</p>", idempotency_key="otp-1-0",
        headers=HEADERS,
    )  # fmt: skip


async def test_starttls_and_auth_deliver_both_parts_with_the_headers(
    starttls_server: tuple[Mailbox, int], certificate: tuple[Path, Path]
) -> None:
    box, port = starttls_server
    provider = SmtpProvider(f"smtp://{USER}:{PASSWORD.replace(' ', '%20')}@127.0.0.1:{port}", timeout=5,
                            tls_context=trusting(certificate))  # fmt: skip
    message_id = await provider.send(outgoing("someone@example.org"))
    [message] = box.messages
    assert box.logins  # authenticated, after STARTTLS (auth_require_tls)
    assert message["Message-ID"] == f"<{message_id}>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Date"] is not None  # CONTRACT §9: Message-ID, Date, no List-Unsubscribe
    assert message["List-Unsubscribe"] is None
    assert message["Subject"] == "OTP Service verification code / 验证码"
    plain, html = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None
    assert html is not None
    assert "您的验证码是：424242" in plain.get_content()
    assert "424242 验证码" in html.get_content()


async def test_an_untrusted_certificate_is_refused_before_anything_is_sent(
    starttls_server: tuple[Mailbox, int],
) -> None:
    box, port = starttls_server
    provider = SmtpProvider(f"smtp://{USER}:x@127.0.0.1:{port}", timeout=5)  # the system CAs only
    with pytest.raises(RetryableError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        await provider.send(outgoing("someone@example.org"))
    assert box.messages == []


async def test_wrong_credentials_fail_over_rather_than_fail_the_message(
    starttls_server: tuple[Mailbox, int], certificate: tuple[Path, Path]
) -> None:
    box, port = starttls_server
    provider = SmtpProvider(
        f"smtp://{USER}:wrong@127.0.0.1:{port}", timeout=5, tls_context=trusting(certificate)
    )
    with pytest.raises(RetryableError, match="535"):
        await provider.send(outgoing("someone@example.org"))
    assert box.messages == []


async def test_smtp_without_starttls_on_offer_sends_nothing(plain_server: tuple[Mailbox, int]) -> None:
    box, port = plain_server
    with pytest.raises(RetryableError, match=r"STARTTLS|starttls"):
        await SmtpProvider(f"smtp://127.0.0.1:{port}", timeout=5).send(outgoing("someone@example.org"))
    assert box.messages == []


async def test_implicit_tls(certificate: tuple[Path, Path]) -> None:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port, ssl_context=server_tls(certificate))
    controller.start()
    try:
        provider = SmtpProvider(f"smtps://127.0.0.1:{port}", timeout=5, tls_context=trusting(certificate))
        await provider.send(outgoing("someone@example.org"))
    finally:
        controller.stop()
    assert len(box.messages) == 1


@pytest.mark.parametrize(("reply", "error"), [
    ("451 4.3.0 try again later", RetryableError), ("452 4.2.2 mailbox full", RetryableError),
    ("550 5.1.1 no such user", PermanentError), ("554 5.7.1 rejected", PermanentError),
])  # fmt: skip
async def test_reply_codes_map_4xx_to_retry_and_5xx_to_failure(
    plain_server: tuple[Mailbox, int], reply: str, error: type[Exception]
) -> None:
    box, port = plain_server
    box.replies.append(reply)
    with pytest.raises(error) as raised:
        await SmtpProvider(f"smtp+insecure://127.0.0.1:{port}", timeout=5).send(
            outgoing("someone@example.org")
        )
    assert type(raised.value) is error
    assert reply.split()[0] in str(raised.value)


def test_settings_refuse_what_is_unsafe() -> None:
    base = {"secret_key": "k" * 32, "redis_url": "redis://127.0.0.1:6379/0", "email_provider": "smtp"}
    with pytest.raises(SettingsError, match="OTP_SMTP_URL is required"):
        load_settings(**base)
    with pytest.raises(SettingsError, match="loopback hosts only"):
        load_settings(**base, smtp_url="smtp+insecure://mail.example.com:25")
    with pytest.raises(SettingsError, match="OTP_SMTP_URL"):
        load_settings(**base, smtp_url="http://mail.example.com")
    assert load_settings(**base, smtp_url="smtp+insecure://127.0.0.1:1025").smtp_url is not None
    assert load_settings(**base, smtp_url="smtps://u:p@smtp.example.com").smtp_url is not None


async def _round_trip(app: Any, box: Mailbox) -> str:
    email = unique_email()
    assert (await app.http.post("/api/v1/auth/otp/send", json={"email": email})).status_code == 202
    await drain(app)
    res = await app.http.post("/api/v1/auth/otp/verify", json={"email": email, "code": box.code_for(email)})
    assert res.status_code == 200, res.text
    return email


@pytest.mark.parametrize("store", [{}, {"redis_url": None}], ids=["redis", "embedded"])
async def test_the_service_delivers_over_starttls_with_auth(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], starttls_server: tuple[Mailbox, int],
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, store: dict[str, Any],
) -> None:  # fmt: skip
    box, port = starttls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # the CA the operator would install
    if store:
        store = {**store, "database_url": f"sqlite+aiosqlite:///{tmp_path / 'otp.db'}"}
    settings = make_settings(
        email_provider="smtp",
        smtp_url=f"smtp://{USER}:{PASSWORD.replace(' ', '%20')}@localhost:{port}",
        **store,
    )
    async with open_app(settings) as app:
        email = await _round_trip(app, box)
        async with app.db.connect() as conn:
            row = (await conn.execute(
                text("SELECT outcome, provider, provider_message_id FROM deliveries WHERE email = :e"), {"e": email}
            )).one()  # fmt: skip
    [message] = box.messages
    assert (row.outcome, row.provider) == ("sent", "smtp")
    assert message["Message-ID"] == f"<{row.provider_message_id}>"


async def test_a_4xx_is_retried_and_then_delivered(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], plain_server: tuple[Mailbox, int]
) -> None:
    box, port = plain_server
    box.replies.append("451 4.3.0 greylisted, try again later")
    async with open_app(
        make_settings(email_provider="smtp", smtp_url=f"smtp+insecure://127.0.0.1:{port}")
    ) as app:
        email = await _round_trip(app, box)
        async with app.db.connect() as conn:
            attempts = await conn.scalar(
                text("SELECT attempts FROM deliveries WHERE email = :e"), {"e": email}
            )
    assert attempts == 2
    assert box.replies == []


async def test_a_5xx_fails_the_delivery_and_is_not_retried(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], plain_server: tuple[Mailbox, int],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG, logger="otp_service")
    box, port = plain_server
    email = unique_email()
    # The server echoes the recipient, as Postfix does: the log must not.
    rejected = f"550 5.1.1 <{email}>: Recipient address rejected"
    box.replies.extend([rejected, rejected])
    async with open_app(
        make_settings(email_provider="smtp", smtp_url=f"smtp+insecure://127.0.0.1:{port}")
    ) as app:
        assert (await app.http.post("/api/v1/auth/otp/send", json={"email": email})).status_code == 202
        await drain(app)
        await asyncio.sleep(0)
        async with app.db.connect() as conn:
            row = (await conn.execute(
                text("SELECT outcome, attempts FROM deliveries WHERE email = :e"), {"e": email}
            )).one()  # fmt: skip
    assert (row.outcome, row.attempts) == ("failed", 1)
    assert box.replies == [rejected]  # asked once
    assert box.messages == []
    lines = [JsonFormatter().format(r) for r in caplog.records]
    assert any("Recipient address rejected" in line for line in lines)
    assert not [line for line in lines if email in line]

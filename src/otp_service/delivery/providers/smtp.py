"""Any mail server over SMTP through aiosmtplib (Postmark, Mailgun, SendGrid, Postfix, Mailpit).

OTP_SMTP_URL decides the transport, and nothing weaker is ever negotiated:
- `smtp://user:pass@host[:587]`: STARTTLS required (a server that does not offer it is an error);
- `smtps://user:pass@host[:465]`: TLS from the first byte;
- `smtp+insecure://host[:25]`: no TLS, loopback hosts only (Settings refuses any other host).

Error mapping (RFC 5321 reply codes):
- 4xx (and a dropped connection, a timeout, a refused connect): RetryableError; 421 and 450-452
  ("try later", mailbox busy, insufficient storage) the same.
- 5xx: PermanentError for the message (550 no such user, 554 rejected); 530/535 (authentication)
  and STARTTLS missing: RetryableError (the account, not the message, is the problem: fail over).

A connection per email: a one-time code is one message, and an idle pooled connection would be
closed by most servers within a minute; the worker's concurrency bounds the connections.
"""

import email.utils as email_utils
import re
import secrets
import ssl
from email.message import EmailMessage
from urllib.parse import unquote

import aiosmtplib

from otp_service.delivery.providers.base import OutgoingEmail, PermanentError, RetryableError
from otp_service.settings import SMTP_SCHEMES, split_url

_ACCOUNT_ERRORS = {530, 534, 535, 538}
"""Authentication required / failed: the configuration, not the message."""


class SmtpProvider:
    name = "smtp"

    def __init__(self, url: str, *, timeout: float, tls_context: ssl.SSLContext | None = None) -> None:
        # The check Settings made (OTP_SMTP_URL), whose errors never quote the URL's password.
        parts = split_url(url, schemes=SMTP_SCHEMES)
        assert parts.hostname
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port or SMTP_SCHEMES[parts.scheme]
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._timeout = timeout
        # Certificates verified against the system's CA store (SSL_CERT_FILE honoured).
        self._tls = tls_context or ssl.create_default_context()

    async def send(self, email: OutgoingEmail) -> str:
        message = EmailMessage()
        message["From"] = email.sender
        message["To"] = email.to
        message["Subject"] = email.subject
        domain = email.sender.rpartition("@")[2].rstrip(">").strip() or None
        # The job's key names the message (short enough to stay on one header line).
        local = re.sub(r"[^A-Za-z0-9.\-]", ".", email.idempotency_key)
        message_id = f"<{local}.{secrets.token_hex(6)}@{domain or 'otp-service.invalid'}>"
        message["Message-ID"] = message_id
        message["Date"] = email_utils.formatdate(usegmt=True)  # an API provider adds its own
        for name, value in email.headers.items():
            message[name] = value
        message.set_content(email.text, charset="utf-8")
        message.add_alternative(email.html, subtype="html", charset="utf-8")
        client = aiosmtplib.SMTP(
            hostname=self._host, port=self._port, timeout=self._timeout, tls_context=self._tls,
            use_tls=self._scheme == "smtps", start_tls=self._scheme == "smtp",
        )  # fmt: skip
        try:
            async with client:
                if self._username is not None:
                    await client.login(self._username, self._password or "")
                errors, _ = await client.send_message(message)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise self._reply_error([r.code for r in exc.recipients], str(exc)) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise self._reply_error([exc.code], exc.message) from None
        except aiosmtplib.SMTPException as exc:
            # No STARTTLS offered, a dropped connection, a timeout, a refused connect.
            raise RetryableError(self.name, f"{type(exc).__name__}: {exc}") from None
        except (OSError, ssl.SSLError) as exc:
            raise RetryableError(self.name, f"{type(exc).__name__}: {exc}") from None
        if errors:  # a recipient refused while the message went to others (one recipient here)
            raise self._reply_error([code for code, _ in errors.values()], str(errors))
        return message_id.strip("<>")

    def _reply_error(self, codes: list[int], text: str) -> RetryableError | PermanentError:
        reason = f"{','.join(map(str, codes))} {text}".strip()[:300]
        if all(500 <= c < 600 for c in codes) and not set(codes) & _ACCOUNT_ERRORS:
            return PermanentError(self.name, reason)
        return RetryableError(self.name, reason)

"""SES notifications delivered by SNS over HTTPS, verified as AWS documents
(https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html).

Every check runs before anything is written or any URL is visited:
- the certificate URL: https, host matching OTP_SNS_CERT_HOST_PATTERN (full match), path ending
  `.pem`, no userinfo, query, fragment or non-default port; fetched with certificate verification
  and no redirects, then cached per URL for a while. A failed fetch is never cached: the cache
  holds only public keys that were fetched and parsed (the lesson of CVE-2023-33185 and
  django-ses's cache bug, where a failure was remembered as a pass);
- the signature: SignatureVersion 1 = SHA1withRSA, 2 = SHA256withRSA (PKCS#1 v1.5) over the
  canonical string of the message type;
- TopicArn in OTP_SNS_TOPIC_ARNS, Timestamp within one hour, the x-amz-sns-message-type header
  (when present) equal to Type.
"""

import base64
import binascii
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from otp_service.clock import Clock, system_clock
from otp_service.errors import WebhookRejected
from otp_service.logs import get_logger
from otp_service.webhooks.events import ProviderEvent, Recipient, clean_address, parse_time

log = get_logger("webhooks.sns")

NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
MAX_SKEW = timedelta(hours=1)
CERT_CACHE_TTL = 3600.0  # seconds; SNS rotates signing certificates rarely, URLs change with them
MAX_CERT_BYTES = 16_384


def check_aws_url(url: object, host_pattern: re.Pattern[str], *, pem: bool) -> str:
    """The rule for SigningCertURL (pem=True) and SubscribeURL (pem=False)."""
    if not isinstance(url, str) or not url:
        raise WebhookRejected("bad_url", "missing URL")
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise WebhookRejected("bad_url", "the URL must be https")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise WebhookRejected("bad_url", "the URL must not carry user information")
    try:
        port = parts.port
    except ValueError:
        raise WebhookRejected("bad_url", "malformed port") from None
    if port not in (None, 443):
        raise WebhookRejected("bad_url", "unexpected port")
    if not parts.hostname or not host_pattern.fullmatch(parts.hostname):
        raise WebhookRejected("bad_url", "host not allowed")
    if pem and (parts.query or parts.fragment or not parts.path.endswith(".pem")):
        raise WebhookRejected("bad_url", "the certificate URL must be a .pem path without query")
    return url


SNS_CERT_NAME = "sns.amazonaws.com"


def _names_sns(cert: x509.Certificate, host: str) -> bool:
    """The certificate is issued to SNS (its CN or a DNS SAN is `sns.amazonaws.com` or the host it
    was fetched from): a host that passed the pattern still cannot serve just any certificate."""
    names = {attr.value for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names |= set(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    return bool({str(n).lower() for n in names} & {SNS_CERT_NAME, host.lower()})


class CertificateCache:
    def __init__(self, http: httpx.AsyncClient, *, clock: Clock, ttl: float = CERT_CACHE_TTL) -> None:
        self._http = http
        self._clock = clock
        self._ttl = ttl
        self._keys: dict[str, tuple[rsa.RSAPublicKey, float]] = {}

    async def public_key(self, url: str) -> rsa.RSAPublicKey:
        cached = self._keys.get(url)
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        try:
            response = await self._http.get(url, follow_redirects=False, timeout=5.0)
        except httpx.HTTPError as exc:
            log.warning("sns.cert_fetch_failed", extra={"error": type(exc).__name__})
            raise WebhookRejected(
                "cert_unavailable", "the signing certificate could not be fetched"
            ) from None
        if response.status_code != 200 or len(response.content) > MAX_CERT_BYTES:
            raise WebhookRejected("cert_unavailable", f"the certificate URL answered {response.status_code}")
        try:
            cert = x509.load_pem_x509_certificate(response.content)
        except ValueError:
            raise WebhookRejected("bad_certificate", "not a PEM certificate") from None
        now = datetime.fromtimestamp(self._clock(), UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise WebhookRejected("bad_certificate", "the certificate is not valid now")
        if not _names_sns(cert, urlsplit(url).hostname or ""):
            raise WebhookRejected("bad_certificate", "the certificate names neither SNS nor its host")
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise WebhookRejected("bad_certificate", "not an RSA certificate")
        self._keys[url] = (key, self._clock() + self._ttl)
        return key


def canonical_string(message: Mapping[str, Any]) -> bytes:
    fields = NOTIFICATION_FIELDS if message["Type"] == "Notification" else CONFIRMATION_FIELDS
    out = []
    for name in fields:
        if name == "Subject" and message.get("Subject") is None:
            continue
        value = message.get(name)
        if not isinstance(value, str):
            raise WebhookRejected("malformed_message", f"missing {name}")
        out.append(f"{name}\n{value}\n")
    return "".join(out).encode()


class SnsVerifier:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        topic_arns: list[str],
        host_pattern: str,
        clock: Clock = system_clock,
    ) -> None:
        self._http = http
        self._topics = frozenset(topic_arns)
        self._host = re.compile(host_pattern)
        self._certs = CertificateCache(http, clock=clock)
        self._clock = clock

    def parse(self, body: bytes, header_type: str | None) -> dict[str, Any]:
        try:
            message = json.loads(body)
        except ValueError:
            raise WebhookRejected("malformed_body", "the body is not JSON") from None
        if not isinstance(message, dict):
            raise WebhookRejected("malformed_body", "the body is not a JSON object")
        kind = message.get("Type")
        if kind not in TYPES:
            raise WebhookRejected("unknown_type", "unknown SNS message type")
        if header_type is not None and header_type != kind:
            raise WebhookRejected("type_mismatch", "x-amz-sns-message-type does not match Type")
        return message

    async def verify(self, body: bytes, header_type: str | None) -> dict[str, Any]:
        message = self.parse(body, header_type)
        if message.get("TopicArn") not in self._topics:
            raise WebhookRejected("unknown_topic", "TopicArn is not in OTP_SNS_TOPIC_ARNS")
        timestamp = parse_time(message.get("Timestamp"))
        if timestamp is None or timestamp.tzinfo is None:
            raise WebhookRejected("malformed_message", "bad Timestamp")
        if abs(datetime.fromtimestamp(self._clock(), UTC) - timestamp) > MAX_SKEW:
            raise WebhookRejected("stale_timestamp", "Timestamp is more than an hour away")
        version = message.get("SignatureVersion")
        algorithm: hashes.HashAlgorithm
        if version == "1":
            algorithm = hashes.SHA1()  # noqa: S303 - SNS SignatureVersion 1 is SHA1withRSA
        elif version == "2":
            algorithm = hashes.SHA256()
        else:
            raise WebhookRejected("bad_signature_version", "SignatureVersion must be 1 or 2")
        if not isinstance(message.get("MessageId"), str) or not message["MessageId"]:
            raise WebhookRejected("malformed_message", "missing MessageId")
        try:
            signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
        except (binascii.Error, ValueError):
            raise WebhookRejected("bad_signature", "Signature is not base64") from None
        signed = canonical_string(message)
        if message["Type"] != "Notification":
            check_aws_url(message.get("SubscribeURL"), self._host, pem=False)
        cert_url = check_aws_url(message.get("SigningCertURL"), self._host, pem=True)
        key = await self._certs.public_key(cert_url)
        try:
            key.verify(signature, signed, padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            raise WebhookRejected("bad_signature", "the signature does not match") from None
        return message

    async def confirm_subscription(self, message: Mapping[str, Any]) -> None:
        url = check_aws_url(message.get("SubscribeURL"), self._host, pem=False)
        try:
            response = await self._http.get(url, follow_redirects=False, timeout=10.0)
        except httpx.HTTPError as exc:
            raise ConnectionError(f"SubscribeURL unreachable: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise ConnectionError(f"SubscribeURL answered {response.status_code}")


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def normalise_ses(message: Mapping[str, Any]) -> ProviderEvent:
    """An SNS Notification carrying an SES event (identity notifications use `notificationType`,
    configuration-set event publishing uses `eventType`)."""
    event_id, payload = str(message["MessageId"]), dict(message)
    try:
        ses = json.loads(message.get("Message", ""))
    except ValueError:
        ses = None
    if not isinstance(ses, dict):
        # e.g. "Successfully validated SNS topic for Amazon SES event publishing."
        return ProviderEvent(
            provider="ses", event_id=event_id, type="text", occurred_at=parse_time(message.get("Timestamp")),
            recipients=(), payload=payload,
        )  # fmt: skip
    kind = ses.get("notificationType") or ses.get("eventType") or "unknown"
    kind = str(kind).lower()
    mail = ses.get("mail") if isinstance(ses.get("mail"), dict) else {}
    assert isinstance(mail, dict)
    message_id = mail.get("messageId") if isinstance(mail.get("messageId"), str) else None
    recipients: list[Recipient] = []
    occurred = None
    if kind == "bounce" and isinstance(ses.get("bounce"), dict):
        bounce = ses["bounce"]
        occurred = parse_time(bounce.get("timestamp"))
        permanent = bounce.get("bounceType") == "Permanent"
        for r in _list(bounce.get("bouncedRecipients")):
            if not isinstance(r, dict) or not (email := clean_address(r.get("emailAddress"))):
                continue
            status = r.get("status")
            hard = permanent and (not status or str(status).startswith("5"))
            detail = {"bounce_type": bounce.get("bounceType"), "bounce_subtype": bounce.get("bounceSubType"),
                      "status": status, "diagnostic": r.get("diagnosticCode")}  # fmt: skip
            recipients.append(Recipient(email, "bounce" if hard else None, detail))
    elif kind == "complaint" and isinstance(ses.get("complaint"), dict):
        complaint = ses["complaint"]
        occurred = parse_time(complaint.get("timestamp"))
        for r in _list(complaint.get("complainedRecipients")):
            if isinstance(r, dict) and (email := clean_address(r.get("emailAddress"))):
                detail = {"feedback_type": complaint.get("complaintFeedbackType")}
                recipients.append(Recipient(email, "complaint", detail))
    else:  # delivery, deliveryDelay, send, reject, …: recorded against the email, suppress nothing
        body = next((v for k, v in ses.items() if k.lower() == kind and isinstance(v, dict)), {})
        occurred = parse_time(body.get("timestamp"))
    return ProviderEvent(
        provider="ses",
        event_id=event_id,
        type=kind,
        occurred_at=occurred or parse_time(message.get("Timestamp")),
        recipients=tuple(recipients),
        payload=payload,
        message_id=message_id,
    )

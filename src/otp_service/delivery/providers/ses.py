"""Amazon SES v2 through aiobotocore, one client for the process lifetime.

Error mapping (SES v2 SendEmail errors):
- TooManyRequestsException, LimitExceededException, throttling: RateLimitedError.
- MessageRejected, BadRequestException: PermanentError.
- AccountSuspendedException, SendingPausedException, MailFromDomainNotVerifiedException,
  NotFoundException, network errors, 5xx: RetryableError (fail over: the account, not the
  message, is the problem).
"""

from collections.abc import Sequence
from typing import Any

from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from otp_service.delivery.providers.base import (
    OutgoingEmail,
    PermanentError,
    RateLimitedError,
    RetryableError,
)
from otp_service.sender.identity import AMAZON_SES_SPF, DnsRecord, IdentityUnavailable, SenderIdentity

_RATE_LIMITED = {"TooManyRequestsException", "LimitExceededException", "Throttling", "ThrottlingException"}
_PERMANENT = {"MessageRejected", "BadRequestException"}


class SesProvider:
    name = "ses"

    def __init__(self, client: Any, *, configuration_set: str | None) -> None:
        self._client = client
        self._configuration_set = configuration_set

    async def send(self, email: OutgoingEmail) -> str:
        request: dict[str, Any] = {
            "FromEmailAddress": email.sender,
            "Destination": {"ToAddresses": [email.to]},
            "Content": {
                "Simple": {
                    "Subject": {"Data": email.subject, "Charset": "UTF-8"},
                    "Body": {
                        "Text": {"Data": email.text, "Charset": "UTF-8"},
                        "Html": {"Data": email.html, "Charset": "UTF-8"},
                    },
                    **(
                        {"Headers": [{"Name": k, "Value": v} for k, v in email.headers.items()]}
                        if email.headers
                        else {}
                    ),
                }
            },
        }
        if self._configuration_set:
            request["ConfigurationSetName"] = self._configuration_set
        try:
            response = await self._client.send_email(**request)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
            if code in _RATE_LIMITED:
                raise RateLimitedError(self.name, code, retry_after=1.0) from None
            if code in _PERMANENT:
                raise PermanentError(self.name, code) from None
            raise RetryableError(self.name, code) from None
        except BotoCoreError as exc:
            raise RetryableError(self.name, f"network error: {type(exc).__name__}") from None
        message_id = response.get("MessageId") if isinstance(response, dict) else None
        if not isinstance(message_id, str) or not message_id:
            raise RetryableError(self.name, "malformed success response")
        return message_id

    async def sender_identity(self, candidates: Sequence[str]) -> SenderIdentity:
        """The sender check's question (CONTRACT §9): GetEmailIdentity for each of `candidates`
        until SES knows one. Its Easy DKIM tokens name the CNAMEs SES signs with; where the v2
        answer carries none (moto's does not), SES v1's GetIdentityDkimAttributes gives them."""
        for name in candidates:
            try:
                answer = await self._client.get_email_identity(EmailIdentity=name)
                dkim = answer.get("DkimAttributes") or {}
                signing, tokens = bool(dkim.get("SigningEnabled")), list(dkim.get("Tokens") or [])
                if not tokens:
                    signing, tokens = await self._v1_dkim_tokens(name)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
                if code == "NotFoundException":
                    continue
                raise IdentityUnavailable(f"ses: GetEmailIdentity {name}: {code}") from None
            except BotoCoreError as exc:
                raise IdentityUnavailable(f"ses: GetEmailIdentity {name}: {type(exc).__name__}") from None
            # VerificationStatus is the identity's own; moto leaves VerifiedForSendingStatus false.
            status = answer.get("VerificationStatus")
            verified = status == "SUCCESS" if status else bool(answer.get("VerifiedForSendingStatus"))
            records = [
                DnsRecord(name=f"{t}._domainkey.{name}", type="CNAME", value=f"{t}.dkim.amazonses.com")
                for t in (tokens if signing else [])
            ]
            mail_from = (answer.get("MailFromAttributes") or {}).get("MailFromDomain") or None
            feedback = f"10 feedback-smtp.{self._client.meta.region_name}.amazonses.com"
            envelope = [
                DnsRecord(name=mail_from, type="MX", value=feedback),
                DnsRecord(name=mail_from, type="TXT", value=f"v=spf1 {AMAZON_SES_SPF} ~all"),
            ] if mail_from else []  # fmt: skip
            return SenderIdentity(
                provider=self.name, domain=name, verified=verified, dkim=tuple(records), envelope=mail_from,
                spf=AMAZON_SES_SPF, records=(*records, *envelope),
            )  # fmt: skip
        return SenderIdentity(
            provider=self.name, domain=None, verified=False, dkim=(), envelope=None, spf=AMAZON_SES_SPF
        )

    async def _v1_dkim_tokens(self, name: str) -> tuple[bool, list[str]]:
        meta = self._client.meta
        async with get_session().create_client(
            "ses", region_name=meta.region_name, endpoint_url=meta.endpoint_url, config=meta.config
        ) as ses:
            answer = await ses.get_identity_dkim_attributes(Identities=[name])
        attributes = (answer.get("DkimAttributes") or {}).get(name) or {}
        return bool(attributes.get("DkimEnabled")), list(attributes.get("DkimTokens") or [])

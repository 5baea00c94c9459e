"""Amazon SES v2 through aiobotocore, one client for the process lifetime.

Error mapping (SES v2 SendEmail errors):
- TooManyRequestsException, LimitExceededException, throttling: RateLimitedError.
- MessageRejected, BadRequestException: PermanentError.
- AccountSuspendedException, SendingPausedException, MailFromDomainNotVerifiedException,
  NotFoundException, network errors, 5xx: RetryableError (fail over: the account, not the
  message, is the problem).
"""

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from otp_service.delivery.providers.base import (
    OutgoingEmail,
    PermanentError,
    RateLimitedError,
    RetryableError,
)

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

"""The embedded default's provider: the whole email on standard output (including the code)."""

import sys
import uuid
from typing import TextIO

from otp_service.delivery.providers.base import OutgoingEmail


class ConsoleProvider:
    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    async def send(self, email: OutgoingEmail) -> str:
        message_id = f"console-{uuid.uuid4()}"
        block = (
            f"\n===== otp-service console email {message_id} =====\n"
            f"From: {email.sender}\nTo: {email.to}\nSubject: {email.subject}\n"
            + "".join(f"{name}: {value}\n" for name, value in email.headers.items())
            + f"Idempotency-Key: {email.idempotency_key}\n"
            f"----- text/plain -----\n{email.text}"
            f"----- text/html -----\n{email.html}"
            f"===== end of email {message_id} =====\n"
        )
        stream = self._stream or sys.stdout
        stream.write(block)
        stream.flush()
        return message_id

"""Helpers shared by test modules."""

import asyncio
import re
import secrets
from dataclasses import dataclass

from otp_service.runtime import Runtime

_EMAIL_BLOCK = re.compile(
    r"===== otp-service console email (?P<id>\S+) =====\n.*?^To: (?P<to>\S+)\n.*?"
    r"Your verification code is: (?P<code>\d+)\n.*?===== end of email (?P=id) =====",
    re.S | re.M,
)


@dataclass(frozen=True)
class SentEmail:
    to: str
    code: str


def console_emails(output: str) -> list[SentEmail]:
    """Emails the console provider printed."""
    return [SentEmail(m["to"], m["code"]) for m in _EMAIL_BLOCK.finditer(output)]


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def drain(runtime: Runtime, timeout: float = 10.0) -> None:
    """Wait until the delivery queue holds nothing unacknowledged."""
    async with asyncio.timeout(timeout):
        while True:
            stats = await runtime.queue.stats()
            if stats.waiting == 0 and stats.pending == 0:
                return
            await asyncio.sleep(0.02)


def unique_email(domain: str = "example.org") -> str:
    return f"user-{secrets.token_hex(4)}@{domain}"

"""Where time is read. Injected into everything that reads it (stores, queue, admin, SNS, the
delivery worker), so tests of 24-hour windows and replay windows move a fake clock instead of
sleeping."""

import time
from typing import Protocol

DAY_MS = 86_400_000


class Clock(Protocol):
    def __call__(self) -> float:
        """Seconds since the epoch."""
        ...


def system_clock() -> float:
    return time.time()


def now_ms(clock: Clock) -> int:
    return int(clock() * 1000)

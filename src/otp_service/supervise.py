"""One supervisor for every background loop (the delivery consumer, held-job renewal, the
heartbeat, the reputation guard, retention, events out; background.py runs each task's loops
under it): a loop that raises is logged (`<loop>.crashed`),
counted (`otp_loop_restarts_total{loop}`) and started again after a backoff, never left dead;
each pass that does its job sets `otp_loop_last_success_timestamp_seconds{loop}`, which the
OtpLoopStalled alert watches (deploy/prometheus/alerts.yml).

A loop is an async function taking its `Beat`; it returns only when it was asked to stop.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable

from otp_service.logs import get_logger
from otp_service.metrics import LOOP_LAST_SUCCESS, LOOP_RESTARTS
from otp_service.tasks import pause

log = get_logger("supervise")

BACKOFF_BASE = 0.1
BACKOFF_CAP = 30.0
"""Seconds before a crashed loop starts again: doubling from 0.1 s, at most 30 s."""


class Beat:
    """A loop's liveness: `ok()` after each pass that did its job."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._gauge = LOOP_LAST_SUCCESS.labels(name)
        self.last_ok: float | None = None

    def ok(self) -> None:
        self.last_ok = time.time()
        self._gauge.set(self.last_ok)


Loop = Callable[[Beat], Awaitable[None]]


async def supervise(name: str, loop: Loop, *, stopping: asyncio.Event) -> None:
    """Run `loop` until it returns or `stopping` is set, starting it again after any exception
    but cancellation."""
    beat = Beat(name)
    restarts = LOOP_RESTARTS.labels(name)
    failures = 0
    while not stopping.is_set():
        started = time.monotonic()
        try:
            await loop(beat)
            return
        except Exception:
            # A loop that ran a while before failing starts its backoff again.
            failures = 1 if time.monotonic() - started > BACKOFF_CAP else failures + 1
            restarts.inc()
            delay = min(BACKOFF_CAP, BACKOFF_BASE * 2**failures)
            log.exception(f"{name}.crashed", extra={"loop": name, "restart_in": delay})
            await pause(stopping, delay)

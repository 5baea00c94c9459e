"""Stopping background tasks reliably.

A cancellation can be swallowed when it lands exactly as a client library's own timeout or
cleanup runs (SQLAlchemy's asyncpg adapter does this during shutdown), so a task is cancelled
again until it is done, within a grace period. Loops also check a stop flag.
"""

import asyncio
import contextlib
import logging

log = logging.getLogger("otp_service.tasks")


async def cancel_and_wait(task: "asyncio.Task[None]", grace: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while not task.done():
        task.cancel()
        remaining = deadline - loop.time()
        await asyncio.wait({task}, timeout=max(0.02, min(0.1, remaining)))
        if remaining <= 0 and not task.done():
            log.error("task.stop_timeout", extra={"task": task.get_name()})
            return
    if not task.cancelled() and task.exception() is not None:
        log.error("task.crashed", exc_info=task.exception(), extra={"task": task.get_name()})


async def pause(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when `stopping` is set: every background loop's wait."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)

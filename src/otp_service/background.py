"""The one base of background work: the delivery worker, the reputation guard, retention and the
events sender are each a `Background`. It holds the stop flag, runs the task's loops each under
the supervisor (supervise.py: a crash is logged, counted and restarted, each good pass is a
heartbeat), and pauses between passes for as long as asked or until stop().

A dependency outage is not a crash: Redis's and the database's failures reach a loop as
`Unavailable` (redisio/guard.py, db/guard.py), which a loop logs and outlives; anything else
is a bug, left to the supervisor.
"""

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from otp_service.errors import Unavailable
from otp_service.logs import get_logger
from otp_service.supervise import Beat, Loop, supervise
from otp_service.tasks import pause


def failure(exc: BaseException) -> str:
    """What a log line names: the failure behind an `Unavailable`, else the exception's type."""
    return type(exc.__cause__ if isinstance(exc, Unavailable) and exc.__cause__ else exc).__name__


class Background:
    """A task's loops, each supervised, until stop(); run() returns once every loop has ended."""

    def __init__(self) -> None:
        self._stopping = asyncio.Event()

    def loops(self) -> Mapping[str, Loop]:
        """Each loop by the name its metrics and log lines carry."""
        raise NotImplementedError

    async def run(self) -> None:
        await asyncio.gather(
            *(supervise(name, loop, stopping=self._stopping) for name, loop in self.loops().items())
        )

    def stop(self) -> None:
        """The loops end at once when idle, or after the pass in progress."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def pause(self, seconds: float) -> None:
        """Sleep `seconds`, or less when stop() is called."""
        await pause(self._stopping, seconds)

    async def until_stopped(self, event: asyncio.Event) -> None:
        """Wait for `event`, or less when stop() is called."""
        waiting = asyncio.ensure_future(event.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
            stopping.cancel()

    def every(self, seconds: float, do: Callable[[], Awaitable[object]], *, failed: str) -> Loop:
        """A loop doing one pass, then a pause of `seconds`, until stop(): a pass that meets an
        outage is logged as `failed` and the next one tries again."""

        logger = get_logger(failed.partition(".")[0])  # the task's own: "retention.failed"

        async def passes(beat: Beat) -> None:
            while not self.stopping:
                try:
                    await do()
                    beat.ok()
                except Unavailable as exc:
                    logger.warning(failed, extra={"error": failure(exc)})
                await self.pause(seconds)

        return passes

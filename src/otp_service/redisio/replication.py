"""Durability before the answer (OTP_REDIS_MIN_REPLICAS): a write the service answers for is held
by that many replicas (WAIT) before the answer goes out, or the answer is 503 `unavailable`.

Redis replicates asynchronously: a primary that dies right after answering takes its last writes
with it, and the replica promoted in its place never had them. WAIT closes that window, but it
waits for the replication offset of the calling *connection's* own last write, and it blocks the
connection it runs on. On the shared pipelined connection it would hold every other request's
commands behind it; so the waits run on a connection of their own, which makes a tiny write of
its own first (MARK: an INCR of one key) and then WAITs. Replication is one ordered stream, so the
mark's offset covers every write the server applied before it, whichever connection made it.

One round (mark, WAIT) answers every caller that was waiting when it began: a caller's write had
its reply, so it was applied before the mark. Callers that arrive during a round join the next
one (their write may have come after that round's mark). A send's added latency is therefore one
replication round trip, two at most, and the number of WAITs does not grow with the traffic.

Outcomes: every caller of a round returns once N replicas acknowledged; `NotReplicated` (a
TimeoutError, so `redis_guard` answers 503 with Retry-After) when fewer did within
OTP_REDIS_REPLICA_TIMEOUT; the round's connection error or error reply (READONLY after a
failover) when it failed, each caller raising an exception of its own.
"""

import asyncio
import contextlib

from otp_service.redisio.client import RedisClient, ReplyError
from otp_service.redisio.keys import RedisKeys


class NotReplicated(TimeoutError):
    """Fewer replicas than OTP_REDIS_MIN_REPLICAS acknowledged the writes in time."""


def mark_key(keys: RedisKeys) -> str:
    """The counter the waits write (under the service's hash tag: the same node on Redis
    Cluster). Built beside the jobs key, whose node it must share; keys.py is its natural home."""
    return keys.jobs.rpartition(":")[0] + ":replication-mark"


def _again(outcome: Exception) -> Exception:
    """A round's failure as an exception of the caller's own: one instance raised in many tasks
    would gather all their tracebacks."""
    if isinstance(outcome, NotReplicated):
        return NotReplicated(str(outcome))
    if isinstance(outcome, ReplyError):
        return ReplyError(str(outcome))
    if isinstance(outcome, OSError):
        return ConnectionError(str(outcome) or type(outcome).__name__)
    return outcome


class ReplicaWait:
    """`await wait()` after a write: it returns once `replicas` replicas hold it."""

    def __init__(self, connection: RedisClient, key: str, *, replicas: int, timeout: float) -> None:
        """`connection`: a client of its own (`dedicated()`), which nothing else uses."""
        if replicas < 1:
            raise ValueError("replicas must be at least 1")
        self._conn = connection
        self._key = key
        self.replicas = replicas
        self._timeout = timeout
        self._timeout_ms = max(1, round(timeout * 1000))  # WAIT's 0 would wait for ever
        self._waiting: list[asyncio.Future[Exception | None]] = []
        self._rounds: asyncio.Task[None] | None = None
        self.rounds = 0
        """Rounds run so far (tests read it: the waits coalesce)."""

    async def wait(self) -> None:
        future: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        if self._rounds is None:
            self._rounds = asyncio.get_running_loop().create_task(self._run())
        outcome = await future
        if outcome is not None:
            raise _again(outcome)

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    outcome = await self._round()
                except BaseException:  # cancelled (aclose): no caller is left waiting
                    for future in batch:
                        future.cancel()
                    raise
                for future in batch:
                    if not future.done():  # else its caller went away
                        future.set_result(outcome)
        finally:
            self._rounds = None

    async def _round(self) -> Exception | None:
        self.rounds += 1
        try:
            # In turn, not pipelined: the WAIT must follow the mark on this connection.
            await self._conn.execute("INCR", self._key)
            acked = await self._conn.execute(
                "WAIT", self.replicas, self._timeout_ms, blocks_for=self._timeout
            )
        except (OSError, ReplyError) as exc:
            return exc
        if int(acked) < self.replicas:
            return NotReplicated(
                f"{int(acked)} of {self.replicas} replica(s) acknowledged within {self._timeout:g} s"
            )
        return None

    async def aclose(self) -> None:
        if self._rounds is not None:
            self._rounds.cancel()
            with contextlib.suppress(BaseException):
                await self._rounds
        for future in self._waiting:
            future.cancel()
        self._waiting.clear()
        await self._conn.aclose()

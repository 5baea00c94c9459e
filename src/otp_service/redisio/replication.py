"""Durability before the answer (OTP_REDIS_MIN_REPLICAS): a write the service answers for is held
by that many replicas (WAIT) before the answer goes out, or the answer is 503 `unavailable`.

Redis replicates asynchronously: a primary that dies right after answering takes its last writes
with it, and the replica promoted in its place never had them. WAIT closes that window, but it
waits for the replication offset of the calling *connection's* own last write, and it blocks the
connection it runs on. On the shared pipelined connection it would hold every other request's
commands behind it; so the waits run on a connection of their own, which makes a tiny write of
its own first (MARK: an INCR of one key) and then WAITs. Replication is one ordered stream, so the
mark's offset covers every write the server applied before it, whichever connection made it.

One round (mark and WAIT, in one write) answers every caller that was waiting when it began: a
caller's write had its reply, so it was applied before the mark. Callers that arrive during a
round start the next one at once on another of the waits' connections (WAIT_CONNECTIONS of
them), so a send's added latency is one replication round trip, not the rest of a round begun
before it plus its own; when every connection is busy they join the first round to start, and the
number of WAITs in flight stays bounded whatever the traffic.

Outcomes: every caller of a round returns once N replicas acknowledged; `NotReplicated` (a
TimeoutError, so `redis_guard` answers 503 with Retry-After) when fewer did within
OTP_REDIS_REPLICA_TIMEOUT; the round's connection error or error reply (READONLY after a
failover) when it failed, each caller raising an exception of its own.
"""

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, Protocol

from otp_service.redisio.client import Arg, ReplyError
from otp_service.redisio.keys import RedisKeys

WAIT_CONNECTIONS = 4
"""Rounds in flight at once at most (each holds a connection of its own while it WAITs)."""


class Pipeline(Protocol):
    async def pipeline(self, *commands: Sequence[Arg], blocks_for: float = 0.0) -> list[Any]: ...

    async def aclose(self) -> None: ...


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

    def __init__(self, connections: Sequence[Pipeline], key: str, *, replicas: int, timeout: float) -> None:
        """`connections`: clients of their own (`dedicated()`), which nothing else uses."""
        if replicas < 1:
            raise ValueError("replicas must be at least 1")
        if not connections:
            raise ValueError("the waits need a connection")
        self._connections = list(connections)
        self._idle = list(connections)
        self._key = key
        self.replicas = replicas
        self._timeout = timeout
        self._timeout_ms = max(1, round(timeout * 1000))  # WAIT's 0 would wait for ever
        self._waiting: list[asyncio.Future[Exception | None]] = []
        self._starting = False
        self._running: set[asyncio.Task[None]] = set()
        self.rounds = 0
        """Rounds run so far (tests read it: the waits coalesce)."""

    async def wait(self) -> None:
        future: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._start_soon()
        outcome = await future
        if outcome is not None:
            raise _again(outcome)

    def _start_soon(self) -> None:
        """A round at the end of this turn of the event loop (every caller of the turn joins
        it), if a connection is free; else the first round to end starts the next."""
        if not self._starting and self._idle and self._waiting:
            self._starting = True
            asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        self._starting = False
        if not self._waiting or not self._idle:
            return
        batch, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(self._run(self._idle.pop(), batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, conn: Pipeline, batch: list[asyncio.Future[Exception | None]]) -> None:
        try:
            outcome = await self._round(conn)
        except BaseException:  # cancelled (aclose): no caller is left waiting
            for future in batch:
                future.cancel()
            raise
        finally:
            self._idle.append(conn)
        for future in batch:
            if not future.done():  # else its caller went away
                future.set_result(outcome)
        self._start_soon()

    async def _round(self, conn: Pipeline) -> Exception | None:
        self.rounds += 1
        try:
            # One write; the WAIT follows the mark on this connection, so it waits for the mark.
            _, acked = await conn.pipeline(
                ("INCR", self._key), ("WAIT", self.replicas, self._timeout_ms), blocks_for=self._timeout
            )
        except (OSError, ReplyError) as exc:
            return exc
        if int(acked) < self.replicas:
            return NotReplicated(
                f"{int(acked)} of {self.replicas} replica(s) acknowledged within {self._timeout:g} s"
            )
        return None

    async def aclose(self) -> None:
        for task in list(self._running):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for future in self._waiting:
            future.cancel()
        self._waiting.clear()
        for conn in self._connections:
            await conn.aclose()

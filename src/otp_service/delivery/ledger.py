"""The worker's database statements, batched (delivery/worker.py): the suppression look-up and
the delivery record of each email. The calls that arrive while a statement runs go together in
the next one, on one long-lived connection in autocommit."""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from otp_service.db.guard import database_guard
from otp_service.delivery.repository import DeliveryRecord, record_outcomes
from otp_service.suppression.repository import suppressions_among

T = TypeVar("T")
K = TypeVar("K")
R = TypeVar("R")


class Ledger:
    """The worker's two statements per email, the suppression look-up and the delivery record,
    batched: the calls that arrive while a statement runs go together in the next one, on one
    long-lived connection in autocommit.

    One pooled connection per statement cost a pool checkout, a pre-ping round trip, BEGIN, COMMIT
    and the rollback on return, through SQLAlchemy's greenlet bridge each time: most of the
    worker's CPU per email (README, "Performance"). A statement that fails drops the connection
    and fails the calls of its batch; the next batch opens a new connection.
    """

    def __init__(self, engine: AsyncEngine, *, timeout: float) -> None:
        self._engine = engine
        self._timeout = timeout
        self._conn: AsyncConnection | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self.flushes: set[asyncio.Task[None]] = set()
        """The batches being written: close() waits for them."""
        self._suppressed = _Batched(self, "ledger.suppressed", _suppressed_batch)
        self.record = _Batched(self, "ledger.record", _record_batch)

    async def run(self, operation: str, statement: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """`statement` on the ledger's connection; the database's failure is `Unavailable`
        (db/guard.py), a call after close() ConnectionError."""
        async with self._lock:
            if self._closed:  # never a fresh connection after close(): it would outlive the engine
                raise ConnectionError("the ledger is closed")
            try:
                async with database_guard(operation), asyncio.timeout(self._timeout):
                    if self._conn is None:
                        conn = await self._engine.connect()
                        self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                    return await statement(self._conn)
            except BaseException:
                await self._drop()
                raise

    async def suppressed(self, email: str, *, remembered: bool = False) -> bool:
        """Whether this exact address is suppressed for a job (CONTRACT §6): a remembered source's
        job still reaches an address that only complaints suppressed."""
        return await self._suppressed((email, remembered)) is not None

    async def suppression(self, email: str, *, remembered: bool = False) -> "Held | None":
        """As suppressed(), and by what when it is: None when the job may be emailed."""
        return await self._suppressed((email, remembered))

    async def close(self) -> None:
        """Let the batches already in flight finish (each is bounded by the timeout), then close
        the connection; later calls fail instead of opening another."""
        if self.flushes:
            await asyncio.wait(set(self.flushes))
        async with self._lock:
            self._closed = True
            await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


class Held(StrEnum):
    """Why a job's address is not emailed: a bounce suppressed it (its send shows
    `undeliverable`, CONTRACT §3), or a complaint or an operator did (it shows `sent`)."""

    BOUNCED = "bounced"
    OTHER = "other"


async def _suppressed_batch(conn: AsyncConnection, asked: list[tuple[str, bool]]) -> list[Held | None]:
    found = await suppressions_among(conn, [email for email, _ in asked])
    held: list[Held | None] = []
    for email, remembered in asked:
        row = found.get(email)
        if row is None or (remembered and row[0]):
            held.append(None)
        else:
            held.append(Held.BOUNCED if row[1] else Held.OTHER)
    return held


async def _record_batch(conn: AsyncConnection, records: list[DeliveryRecord]) -> list[None]:
    await record_outcomes(conn, records)
    return [None] * len(records)


class _Batched(Generic[K, R]):
    def __init__(
        self, ledger: Ledger, operation: str, run: Callable[[AsyncConnection, list[K]], Awaitable[list[R]]]
    ) -> None:
        self._ledger = ledger
        self._operation = operation
        self._run = run
        self._waiting: list[tuple[K, asyncio.Future[R]]] = []
        self._flush: asyncio.Task[None] | None = None

    async def __call__(self, item: K) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._flush is None:
            self._flush = flush = asyncio.create_task(self._flush_waiting())
            self._ledger.flushes.add(flush)
            flush.add_done_callback(self._ledger.flushes.discard)
        return await future

    async def _flush_waiting(self) -> None:
        await asyncio.sleep(0)  # the callers of this turn join the batch
        batch, self._waiting, self._flush = self._waiting, [], None
        try:
            results = await self._ledger.run(
                self._operation, lambda conn: self._run(conn, [item for item, _ in batch])
            )
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

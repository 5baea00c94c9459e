"""The durable delivery queue: a Redis Stream with a consumer group, or an in-process twin.

A job is read by one consumer and stays pending until acknowledged. A consumer that dies leaves
its jobs pending; another consumer reclaims jobs idle longer than the visibility timeout, so
nothing accepted is lost. A live consumer holding a job longer (retrying a provider) touches it
to keep its claim.
"""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from otp_service.clock import Clock, now_ms, system_clock
from otp_service.redisio import RedisClient, RedisKeys, ReplyError, redis_guard
from otp_service.redisio.streams import ConsumerGroup, Entry

GROUP = "delivery"

# A job's fields in the stream, as otp/lua/send.lua writes them (its header lists them too).
PAYLOAD = b"p"
"""The sealed job (delivery/jobs.py)."""
EXPIRES_MS = b"x"
"""When the job's code expires: ms since the epoch."""
RESENT = b"c"
"""A re-send of the live code: the sealed job of the send that issued it, as the code store kept
it."""
LEFT_S = b"l"
"""A re-send: the whole seconds the live code has left, which the email states."""
REMEMBERED = b"r"
"""b'1' when a remembered source requested the send (CONTRACT §6): its email passes a provider
pause, and reaches an address suppressed by complaints only."""
CAPTCHA = b"v"
"""b'1' when the request carried a valid captcha token: its email passes a provider pause."""
TRACE = b"t"
"""The request's trace context, a W3C traceparent: only when tracing is on (otp_service/tracing);
the worker's provider call is then a span of that trace."""


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    payload: bytes  # the sealed JobContent
    expires_at_ms: int
    # A send that emails the live code again (OTP_RESEND_STRATEGY=reuse, or a remembered
    # source's code): the sealed job that sent that code, and the seconds it had left.
    reused_code: bytes | None = None
    lifetime_s: int | None = None
    remembered: bool = False  # a remembered source requested it
    captcha: bool = False  # the request carried a valid captcha token
    trace: str | None = None  # the request's trace context (TRACE), when it was traced

    @property
    def passes_pause(self) -> bool:
        """Whether the email leaves even while every provider is paused (CONTRACT §6): a person
        vouched for it by verifying from this source before, or by solving a captcha."""
        return self.remembered or self.captcha


@dataclass(frozen=True, slots=True)
class QueueStats:
    waiting: int  # accepted, not yet read by any consumer
    pending: int  # read by a consumer, not yet acknowledged
    oldest_age_ms: int  # age of the oldest unacknowledged job


class JobQueue(Protocol):
    async def ensure_ready(self) -> None: ...

    async def read(self, consumer: str, count: int, block_ms: int) -> list[Job]: ...

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Job]: ...

    async def touch(self, consumer: str, job_ids: Sequence[str]) -> None: ...

    async def forget_idle_consumers(self, min_idle_ms: int) -> list[str]:
        """Drop consumers that hold nothing and have not read for `min_idle_ms` (processes
        gone for good); their names are returned."""
        ...

    async def ack(self, job_id: str) -> None: ...

    async def stats(self) -> QueueStats: ...

    async def aclose(self) -> None: ...


def _id_time_ms(job_id: str) -> int:
    """A stream id (and the in-process queue's) starts with the ms it was queued at."""
    return int(job_id.split("-", 1)[0])


def queued_at(job_id: str) -> datetime | None:
    """When a job was queued (None for an id that is not the queue's)."""
    if not job_id.partition("-")[0].isdigit():
        return None
    return datetime.fromtimestamp(_id_time_ms(job_id) / 1000, UTC)


def _jobs(found: list[Entry]) -> list[Job]:
    jobs = []
    for entry_id, fields in found:
        if PAYLOAD in fields:
            resent, left, trace = fields.get(RESENT), fields.get(LEFT_S), fields.get(TRACE)
            lifetime = None if left is None else int(left)
            # An entry without its expiry (never written by send.lua) is dropped as expired
            # rather than failing the read that carries it, again at every reclaim.
            jobs.append(Job(
                entry_id, fields[PAYLOAD], int(fields.get(EXPIRES_MS, 0)), resent, lifetime,
                remembered=fields.get(REMEMBERED) == b"1", captcha=fields.get(CAPTCHA) == b"1",
                trace=None if trace is None else trace.decode(),
            ))  # fmt: skip
    return jobs


class RedisJobQueue:
    """The stream and its consumer group (redisio.streams.ConsumerGroup), on the service's Redis
    client."""

    def __init__(self, redis: RedisClient, keys: RedisKeys, *, clock: Clock = system_clock) -> None:
        self._redis = redis
        self._group = ConsumerGroup(redis, keys.jobs, GROUP, name="queue")
        self._stream = keys.jobs
        self._clock = clock

    async def aclose(self) -> None:
        await self._group.aclose()

    async def ensure_ready(self) -> None:
        await self._group.create()

    async def read(self, consumer: str, count: int, block_ms: int) -> list[Job]:
        return _jobs(await self._group.read(consumer, count, block_ms))

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Job]:
        return _jobs(await self._group.reclaim(consumer, min_idle_ms, count))

    async def touch(self, consumer: str, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        await self._group.command(
            "queue.touch", "XCLAIM", self._stream, GROUP, consumer, 0, *job_ids, "JUSTID"
        )

    async def forget_idle_consumers(self, min_idle_ms: int) -> list[str]:
        # Every worker reads under a name of its own, so the group keeps the name of every
        # process that ever ran. Only names holding no job are dropped (XGROUP DELCONSUMER
        # discards a consumer's pending entries), and a live worker reads every second, so it
        # is never idle for long.
        await self.ensure_ready()  # XINFO on a stream that is gone is a plain ERR
        consumers: Any = await self._group.command(
            "queue.forget_consumers", "XINFO", "CONSUMERS", self._stream, GROUP
        )
        async with redis_guard("queue.forget_consumers"):
            gone = []
            for raw in consumers:
                info = dict(zip(raw[::2], raw[1::2], strict=True))
                if int(info[b"pending"]) == 0 and int(info[b"idle"]) >= min_idle_ms:
                    gone.append(info[b"name"].decode())
            for name in gone:
                await self._redis.execute("XGROUP", "DELCONSUMER", self._stream, GROUP, name)
        return gone

    async def ack(self, job_id: str) -> None:
        await self._group.ack(job_id)

    async def _pending_count(self) -> int:
        try:
            summary = await self._redis.execute("XPENDING", self._stream, GROUP)
        except ReplyError:  # no group yet: nothing was ever read
            return 0
        return int(summary[0])

    async def stats(self) -> QueueStats:
        async with redis_guard("queue.stats"):
            replies: tuple[Any, Any, int] = await asyncio.gather(
                self._redis.execute("XLEN", self._stream),
                self._redis.execute("XRANGE", self._stream, "-", "+", "COUNT", 1),
                self._pending_count(),
            )
        length, first, pending_count = int(replies[0]), replies[1], replies[2]
        oldest = 0
        if isinstance(first, list) and first:
            oldest = max(0, now_ms(self._clock) - _id_time_ms(first[0][0].decode()))
        return QueueStats(waiting=max(0, length - pending_count), pending=pending_count,
                          oldest_age_ms=oldest)  # fmt: skip

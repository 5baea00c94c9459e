"""The durable delivery queue: a Redis Stream with a consumer group, or an in-process twin.

A job is read by one consumer and stays pending until acknowledged. A consumer that dies leaves
its jobs pending; another consumer reclaims jobs idle longer than the visibility timeout, so
nothing accepted is lost. A live consumer holding a job longer (retrying a provider) touches it
to keep its claim.
"""

import asyncio
import collections
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import ResponseError

from otp_service.limits.base import Clock, system_clock
from otp_service.limits.keys import RedisClient, RedisKeys
from otp_service.limits.redis_store import redis_guard

GROUP = "delivery"


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    payload: bytes
    expires_at_ms: int


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


def _id_time_ms(job_id: str) -> int:
    return int(job_id.split("-", 1)[0])


def _job(job_id: bytes, fields: dict[bytes, bytes] | None) -> Job | None:
    if not fields or b"p" not in fields:
        return None
    return Job(id=job_id.decode(), payload=fields[b"p"], expires_at_ms=int(fields.get(b"x", 0)))


class RedisJobQueue:
    def __init__(
        self, redis: RedisClient, keys: RedisKeys, *, timeout: float, clock: Clock = system_clock
    ) -> None:
        self._redis = redis
        self._stream = keys.jobs
        self._timeout = timeout
        self._clock = clock

    async def ensure_ready(self) -> None:
        async with redis_guard(self._timeout, "queue.create_group"):
            try:
                # From the start of the stream: jobs accepted before any worker existed count.
                await self._redis.xgroup_create(self._stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read(self, consumer: str, count: int, block_ms: int) -> list[Job]:
        async with redis_guard(self._timeout + block_ms / 1000, "queue.read"):
            try:
                reply: Any = await self._redis.xreadgroup(
                    GROUP, consumer, {self._stream: ">"}, count=count, block=block_ms
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self.ensure_ready()
                return []
        jobs: list[Job] = []
        for _stream, entries in reply or []:
            jobs.extend(j for j in (_job(i, f) for i, f in entries) if j is not None)
        return jobs

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Job]:
        async with redis_guard(self._timeout, "queue.reclaim"):
            reply: Any = await self._redis.xautoclaim(
                self._stream,
                GROUP,
                consumer,
                min_idle_time=min_idle_ms,
                start_id="0-0",
                count=count,
            )
        entries = reply[1]
        return [j for j in (_job(i, f) for i, f in entries) if j is not None]

    async def touch(self, consumer: str, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        async with redis_guard(self._timeout, "queue.touch"):
            await self._redis.xclaim(
                self._stream, GROUP, consumer, min_idle_time=0, message_ids=list(job_ids),
                justid=True,
            )  # fmt: skip

    async def forget_idle_consumers(self, min_idle_ms: int) -> list[str]:
        # Every serving process reads under a name of its own, so the group keeps the name of
        # every process that ever ran. Only names holding no job are dropped (XGROUP
        # DELCONSUMER discards a consumer's pending entries), and a live worker reads every
        # second, so it is never idle for long.
        async with redis_guard(self._timeout, "queue.forget_consumers"):
            consumers: Any = await self._redis.xinfo_consumers(self._stream, GROUP)
            gone = [c["name"] for c in consumers if int(c["pending"]) == 0 and int(c["idle"]) >= min_idle_ms]
            for name in gone:
                await self._redis.xgroup_delconsumer(self._stream, GROUP, name)
        return [n.decode() if isinstance(n, bytes) else n for n in gone]

    async def ack(self, job_id: str) -> None:
        async with (
            redis_guard(self._timeout, "queue.ack"),
            self._redis.pipeline(transaction=True) as pipe,
        ):
            pipe.xack(self._stream, GROUP, job_id)
            pipe.xdel(self._stream, job_id)
            await pipe.execute()

    async def stats(self) -> QueueStats:
        async with (
            redis_guard(self._timeout, "queue.stats"),
            self._redis.pipeline(transaction=False) as pipe,
        ):
            pipe.xlen(self._stream)
            pipe.xpending(self._stream, GROUP)
            pipe.xrange(self._stream, count=1)
            length, pending, first = await pipe.execute(raise_on_error=False)
        pending_count = int(pending["pending"]) if isinstance(pending, dict) else 0
        length = int(length) if isinstance(length, int) else 0
        oldest = 0
        if isinstance(first, list) and first:
            oldest = max(0, int(self._clock() * 1000) - _id_time_ms(first[0][0].decode()))
        return QueueStats(waiting=max(0, length - pending_count), pending=pending_count,
                          oldest_age_ms=oldest)  # fmt: skip


class MemoryJobQueue:
    """The embedded default's queue: same semantics, one process, nothing survives a restart."""

    def __init__(self, clock: Clock = system_clock) -> None:
        self._clock = clock
        self._jobs: dict[str, Job] = {}
        self._ready: collections.deque[str] = collections.deque()
        self._inflight: dict[str, tuple[str, float]] = {}
        self._seq = 0
        self._wakeup = asyncio.Event()

    def enqueue(self, payload: bytes, expires_at_ms: int) -> str:
        self._seq += 1
        job_id = f"{int(self._clock() * 1000)}-{self._seq}"
        self._jobs[job_id] = Job(job_id, payload, expires_at_ms)
        self._ready.append(job_id)
        self._wakeup.set()
        return job_id

    async def ensure_ready(self) -> None:
        return None

    async def read(self, consumer: str, count: int, block_ms: int) -> list[Job]:
        if not self._ready and block_ms > 0:
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), block_ms / 1000)
            except TimeoutError:
                return []
        jobs: list[Job] = []
        while self._ready and len(jobs) < count:
            job_id = self._ready.popleft()
            if job_id in self._jobs:
                self._inflight[job_id] = (consumer, time.monotonic())
                jobs.append(self._jobs[job_id])
        return jobs

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Job]:
        now = time.monotonic()
        jobs: list[Job] = []
        for job_id, (_owner, since) in list(self._inflight.items()):
            if len(jobs) >= count:
                break
            if (now - since) * 1000 >= min_idle_ms:
                self._inflight[job_id] = (consumer, now)
                jobs.append(self._jobs[job_id])
        return jobs

    async def forget_idle_consumers(self, min_idle_ms: int) -> list[str]:
        return []  # one process: consumers are not recorded

    async def touch(self, consumer: str, job_ids: Sequence[str]) -> None:
        now = time.monotonic()
        for job_id in job_ids:
            if job_id in self._inflight:
                self._inflight[job_id] = (consumer, now)

    async def ack(self, job_id: str) -> None:
        self._inflight.pop(job_id, None)
        self._jobs.pop(job_id, None)

    async def stats(self) -> QueueStats:
        oldest = 0
        if self._jobs:
            first = next(iter(self._jobs))
            oldest = max(0, int(self._clock() * 1000) - _id_time_ms(first))
        return QueueStats(waiting=len(self._ready), pending=len(self._inflight),
                          oldest_age_ms=oldest)  # fmt: skip

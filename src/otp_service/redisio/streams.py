"""A Redis Stream read through a consumer group: what the delivery queue and events out share."""

import logging
from typing import Any

from otp_service.redisio.client import Arg, RedisClient, ReplyError
from otp_service.redisio.guard import redis_guard
from otp_service.redisio.scripts import Script

log = logging.getLogger("otp_service.redisio")

Entry = tuple[str, dict[bytes, bytes]]
"""A stream entry: its id and its fields."""


def entries(raw: list[Any] | None) -> list[Entry]:
    """Stream entries `[id, [field, value, …]]` by id and fields; an entry deleted while it was
    pending comes back without fields, and is left out."""
    out = []
    for entry in raw or []:
        if entry and entry[1]:
            out.append((entry[0].decode(), dict(zip(entry[1][::2], entry[1][1::2], strict=True))))
    return out


class ConsumerGroup:
    """One group on one stream, on the service's Redis client; blocking reads on a connection of
    their own. A group that is gone (NOGROUP: a Redis that keeps nothing restarted, or the stream
    was deleted) is created again and logged as `<name>.group_recreated`: what it held is lost
    with it, the loops go on."""

    _ACK = Script(("otp_service.redisio", "stream_ack"), allow_oom=True)  # frees memory

    def __init__(self, redis: RedisClient, stream: str, group: str, *, name: str) -> None:
        self._redis = redis
        self._blocking = redis.dedicated()
        self.stream = stream
        self._group = group
        self._name = name

    async def aclose(self) -> None:
        await self._blocking.aclose()

    async def create(self) -> None:
        """The group, from the start of the stream (entries added before any reader existed
        count), the stream created if need be; a group that exists already is left as it is."""
        async with redis_guard(f"{self._name}.create_group"):
            try:
                await self._redis.execute("XGROUP", "CREATE", self.stream, self._group, "0", "MKSTREAM")
            except ReplyError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read(self, consumer: str, count: int, block_ms: int) -> list[Entry]:
        """New entries for `consumer`, waiting up to `block_ms` for the first."""
        async with redis_guard(f"{self._name}.read"):
            try:
                reply: Any = await self._blocking.execute(
                    "XREADGROUP", "GROUP", self._group, consumer, "COUNT", count, "BLOCK", block_ms,
                    "STREAMS", self.stream, ">", blocks_for=block_ms / 1000,
                )  # fmt: skip
            except ReplyError as exc:
                # The group is gone (NOGROUP), or the stream was deleted while this read waited
                # on it (UNBLOCKED): a Redis that keeps nothing restarted. Create it again.
                if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                    raise
                log.warning(f"{self._name}.group_recreated", extra={"operation": f"{self._name}.read"})
                await self.create()
                return []
        return [e for _stream, batch in reply or [] for e in entries(batch)]

    async def command(self, operation: str, *command: Arg) -> Any:
        """A command on the group, tried once more after creating a group that is gone."""
        async with redis_guard(operation):
            try:
                return await self._redis.execute(*command)
            except ReplyError as exc:
                if not str(exc).startswith("NOGROUP"):
                    raise
            log.warning(f"{self._name}.group_recreated", extra={"operation": operation})
            await self.create()
            return await self._redis.execute(*command)

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """Entries pending longer than `min_idle_ms` (their consumer died), now `consumer`'s."""
        reply: Any = await self.command(
            f"{self._name}.reclaim", "XAUTOCLAIM", self.stream, self._group, consumer, min_idle_ms, "0-0",
            "COUNT", count,
        )  # fmt: skip
        return entries(reply[1])

    async def ack(self, entry_id: str) -> None:
        async with redis_guard(f"{self._name}.ack"):
            await self._ACK(self._redis, [self.stream], [self._group, entry_id])

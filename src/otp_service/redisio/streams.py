"""What the stores that read a Redis Stream through a consumer group share."""

from otp_service.redisio.client import RedisClient, ReplyError
from otp_service.redisio.guard import redis_guard


async def create_group(redis: RedisClient, stream: str, group: str, operation: str) -> None:
    """The consumer group, from the start of the stream (entries added before any reader existed
    count), the stream created if need be; a group that exists already is left as it is."""
    async with redis_guard(operation):
        try:
            await redis.execute("XGROUP", "CREATE", stream, group, "0", "MKSTREAM")
        except ReplyError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

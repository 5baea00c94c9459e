"""Redis failures as the service's errors, mapped here and nowhere else: a Redis that is slow,
down, or says "not now" is 503 `unavailable` with Retry-After (fail closed), never a 500 or a
hang. The transports bound every call themselves, so no timer is set here."""

import contextlib
from collections.abc import AsyncIterator

from otp_service.errors import Unavailable
from otp_service.logs import get_logger
from otp_service.redisio.client import ReplyError

log = get_logger("redis")

NOT_NOW = frozenset(
    {
        "LOADING",  # a restarted Redis still loading its dataset
        "READONLY",  # a replica (after a failover, the client still pointed at the old primary)
        "BUSY",  # a script has run past busy-reply-threshold
        "MASTERDOWN",  # a replica that lost its primary, with replica-serve-stale-data no
        "TRYAGAIN",  # Redis Cluster: a multi-key command during a slot migration
        "CLUSTERDOWN",  # Redis Cluster: slots not covered
        "OOM",  # maxmemory reached under noeviction
        "NOREPLICAS",  # min-replicas-to-write not met
        "MISCONF",  # an RDB save failed and stop-writes-on-bgsave-error is on
    }
)
"""Error replies that say the server cannot answer now, not that the command is wrong."""


def reply_code(error: ReplyError) -> str:
    """An error reply's code: its first word ("OOM command not allowed…" -> "OOM")."""
    return str(error).split(" ", 1)[0]


@contextlib.asynccontextmanager
async def redis_guard(operation: str) -> AsyncIterator[None]:
    try:
        yield
    except (OSError, TimeoutError) as exc:
        log.warning("redis.unavailable", extra={"operation": operation, "error": type(exc).__name__})
        raise Unavailable("The limit store is not answering; try again shortly") from exc
    except ReplyError as exc:
        code = reply_code(exc)
        if code not in NOT_NOW:
            raise
        log.warning("redis.unavailable", extra={"operation": operation, "error": code})
        raise Unavailable("The limit store cannot answer now; try again shortly") from exc

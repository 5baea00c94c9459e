"""Redis failures as the service's errors: slow or down is 503 (fail closed), never a 500 or a
hang. The transports bound every call themselves, so no timer is set here."""

import contextlib
from collections.abc import AsyncIterator

from otp_service.errors import Unavailable
from otp_service.logs import get_logger

log = get_logger("redis")


@contextlib.asynccontextmanager
async def redis_guard(operation: str) -> AsyncIterator[None]:
    try:
        yield
    except (OSError, TimeoutError) as exc:
        log.warning("redis.unavailable", extra={"operation": operation, "error": type(exc).__name__})
        raise Unavailable("The limit store is not answering; try again shortly") from exc

"""What the stores need from a Redis: one command at a time, any number of callers at once.

Two transports implement it: `PipelinedRedis` (a Redis server over TCP, TLS or a unix socket)
and `EmbeddedRedis` (an in-memory Redis inside this process, the embedded default). The stores,
their Lua scripts and their stream commands are the same on both.
"""

from typing import Any, Protocol

Arg = bytes | str | int | float


class ReplyError(Exception):
    """Redis answered this command with an error reply (-ERR, -NOSCRIPT, -BUSYGROUP, …)."""


class RedisClient(Protocol):
    async def execute(self, *args: Arg, blocks_for: float = 0.0) -> Any:
        """One command; `blocks_for` (seconds) extends the deadline of a blocking command.
        Raises ReplyError for an error reply, OSError (ConnectionError, TimeoutError) when the
        server cannot be reached or does not answer in time."""
        ...

    def dedicated(self) -> "RedisClient":
        """Another connection to the same server: blocking reads take one of their own, so that
        nothing queues behind them."""
        ...

    async def aclose(self) -> None: ...


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

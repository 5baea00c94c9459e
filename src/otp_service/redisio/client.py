"""What the stores need from a Redis: one command at a time, any number of callers at once.

Two transports implement it: `PipelinedRedis` (a Redis server over TCP, TLS or a unix socket)
and `EmbeddedRedis` (an in-memory Redis inside this process, the embedded default). The stores,
their Lua scripts and their stream commands are the same on both.
"""

from typing import Any, Protocol

Arg = bytes | str | int | float


class ReplyError(Exception):
    """Redis answered this command with an error reply (-ERR, -NOSCRIPT, -BUSYGROUP, …)."""


class Replicas(Protocol):
    async def wait(self) -> None:
        """Returns once the required replicas hold every write the server applied so far;
        raises TimeoutError (NotReplicated) when they do not in time (replication.py)."""
        ...


class RedisClient(Protocol):
    @property
    def replicas(self) -> Replicas | None:
        """What a write the service answers for waits on (OTP_REDIS_MIN_REPLICAS); None: it
        waits for nothing (the setting's default, and the embedded default's, which has no
        replicas)."""
        ...

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

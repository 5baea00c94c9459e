"""The embedded default's Redis: an in-memory Redis inside this process (fakeredis, whose Lua
runs in lupa), behind the same interface as `PipelinedRedis`. The stores send it the same
commands and the same Lua scripts as a Redis server, so the embedded default decides every rule
exactly as production does; there is no second implementation of any rule to keep in step.

A command runs to completion on the event loop's thread as it is called (a script takes about a
millisecond or two), so the embedded default serves hundreds of sends a second, not thousands:
for trying the service, integrators' CI and small single-process deployments (README, "The
embedded default"). A blocking read (XREADGROUP … BLOCK) waits on the loop without holding it.
Nothing survives a restart, as with a Redis that keeps nothing on disk.
"""

import asyncio
from typing import Any

from fakeredis import FakeServer
from fakeredis._helpers import SimpleError
from fakeredis._socket._async import AsyncFakeSocket

from otp_service.redisio.client import Arg, ReplyError

REDIS_VERSION = (7, 2)
"""The Redis version the in-memory server reports and follows (XAUTOCLAIM needs 6.2)."""


class _Socket(AsyncFakeSocket):
    """One client connection to the in-memory server."""

    def _decode_error(self, error: SimpleError) -> ReplyError:  # type: ignore[override]
        # The error reply's text as a Redis server sends it ("NOSCRIPT …", "BUSYGROUP …"), as
        # PipelinedRedis raises it, not as redis-py's exception classes (which drop the code).
        return ReplyError(error.value)


def _field(arg: Arg) -> bytes:
    """An argument as it goes on the wire (numbers in their decimal form, as hiredis packs them)."""
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    return repr(arg).encode() if isinstance(arg, float) else str(arg).encode()


class EmbeddedRedis:
    """One connection to an in-memory Redis server; `dedicated()` opens another to the same one."""

    def __init__(self, server: FakeServer | None = None) -> None:
        self._server = server if server is not None else FakeServer(version=REDIS_VERSION)
        self._socket: _Socket | None = None
        self._closed = False

    def dedicated(self) -> "EmbeddedRedis":
        return EmbeddedRedis(self._server)

    async def execute(self, *args: Arg, blocks_for: float = 0.0) -> Any:
        if self._closed:
            raise ConnectionError("client closed")
        if self._socket is None:
            self._socket = _Socket(self._server, 0, None, EmbeddedRedis)
        replies: asyncio.Queue[Any] = self._socket.responses
        self._socket._process_command([_field(arg) for arg in args])
        # A command that does not block has answered by now; a blocking one answers from a task
        # of its own when it is served or times out.
        reply = replies.get_nowait() if not replies.empty() else await replies.get()
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def aclose(self) -> None:
        self._closed = True
        if self._socket is not None:
            self._socket.close()
            self._socket = None

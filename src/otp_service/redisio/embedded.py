"""The embedded default's Redis: an in-memory Redis inside this process (fakeredis, whose Lua
runs in lupa), behind the same interface as `PipelinedRedis`. The stores send it the same
commands and the same Lua scripts as a Redis server, so the embedded default decides every rule
exactly as production does; there is no second implementation of any rule to keep in step
(one line differs, and only as the server reads it: see `_scripted`).

A command runs to completion on the event loop's thread as it is called (a script takes about a
millisecond or two), so the embedded default serves hundreds of sends a second, not thousands:
for trying the service, integrators' CI and small single-process deployments (README, "The
embedded default"). A blocking read (XREADGROUP … BLOCK) waits on the loop without holding it.
Nothing survives a restart, as with a Redis that keeps nothing on disk.
"""

import asyncio
import hashlib
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


def _sha(source: bytes) -> bytes:
    return hashlib.sha1(source).hexdigest().encode()  # noqa: S324 - Redis names scripts by SHA-1


class _Server:
    """The in-memory server, and the scripts it knows under the SHA a Redis server names them by."""

    def __init__(self) -> None:
        self.fake = FakeServer(version=REDIS_VERSION)
        self.aliases: dict[bytes, bytes] = {}


def _scripted(args: tuple[Arg, ...], server: _Server) -> tuple[Arg, ...]:
    """EVAL and EVALSHA as the in-memory server takes them. Its Lua does not read Redis 7's
    `#!lua flags=…` line, whose flags guard a full Redis and a replica, which it never is: the
    line becomes a comment (the line numbers stay), and the script stays known by the SHA of
    its source as sent."""
    name = args[0].upper() if isinstance(args[0], str) else b""
    if name == "EVALSHA" and len(args) > 1:
        sha = _field(args[1])
        return (args[0], server.aliases.get(sha, sha), *args[2:])
    if name == "EVAL" and len(args) > 1:
        source = _field(args[1])
        if source.startswith(b"#!"):
            commented = b"--" + source
            server.aliases[_sha(source)] = _sha(commented)
            return (args[0], commented, *args[2:])
    return args


class EmbeddedRedis:
    """One connection to an in-memory Redis server; `dedicated()` opens another to the same one."""

    def __init__(self, server: _Server | None = None) -> None:
        self._server = server if server is not None else _Server()
        self._socket: _Socket | None = None
        self._closed = False

    def dedicated(self) -> "EmbeddedRedis":
        return EmbeddedRedis(self._server)

    async def execute(self, *args: Arg, blocks_for: float = 0.0) -> Any:
        if self._closed:
            raise ConnectionError("client closed")
        if self._socket is None:
            self._socket = _Socket(self._server.fake, 0, None, EmbeddedRedis)
        replies: asyncio.Queue[Any] = self._socket.responses
        self._socket._process_command([_field(arg) for arg in _scripted(args, self._server)])
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

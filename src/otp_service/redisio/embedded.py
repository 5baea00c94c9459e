"""The embedded default's Redis: an in-memory Redis inside this process (fakeredis, whose Lua
runs in lupa), behind the same interface as `PipelinedRedis`. The stores send it the same
commands and the same Lua scripts as a Redis server, so the embedded default decides every rule
exactly as production does; there is no second implementation of any rule to keep in step
(one line differs, and only as the server reads it: see `_scripted`).

It is reached through fakeredis's public client, a redis-py `redis.asyncio.Redis` on an
in-memory connection, so that any fakeredis release in pyproject's range will do (its private
socket, a little quicker, changed under every release). redis-py's reply parsing is turned off:
replies come back as the server's raw values, as from `PipelinedRedis`.

A command runs to completion on the event loop's thread as it is called (a script takes about a
millisecond or two), so the embedded default serves hundreds of sends a second, not thousands:
for trying the service, integrators' CI and small single-process deployments (README, "The
embedded default"). A blocking read (XREADGROUP … BLOCK) waits on the loop without holding it.
Nothing survives a restart, as with a Redis that keeps nothing on disk.
"""

import hashlib
from typing import Any

from fakeredis import FakeAsyncRedis, FakeServer
from redis import exceptions as redis_errors

from otp_service.redisio.client import Arg, ReplyError

REDIS_VERSION = (7, 2)
"""The Redis version the in-memory server reports and follows (XAUTOCLAIM needs 6.2)."""

_STRIPPED_CODES: tuple[tuple[type[redis_errors.ResponseError], str], ...] = (
    (redis_errors.NoScriptError, "NOSCRIPT"),
    (redis_errors.OutOfMemoryError, "OOM"),
    (redis_errors.ReadOnlyError, "READONLY"),
    (redis_errors.ExecAbortError, "EXECABORT"),
    (redis_errors.NoPermissionError, "NOPERM"),
    (redis_errors.TryAgainError, "TRYAGAIN"),
    (redis_errors.MasterDownError, "MASTERDOWN"),
    (redis_errors.ClusterDownError, "CLUSTERDOWN"),
)
"""The error codes redis-py takes off an error reply's text and tells by its exception class
instead (its parser's EXCEPTION_CLASSES; subclasses before their bases)."""

_KEPT_CODES = frozenset(
    {"WRONGTYPE", "BUSYGROUP", "NOGROUP", "UNBLOCKED", "BUSYKEY", "NOTBUSY", "NOPROTO", "BUSY", "NOREPLICAS",
     "MISCONF"}
)  # fmt: skip
"""Error codes redis-py leaves on the text. Any other reply redis-py raises as a plain
ResponseError was an ERR, whose code it took off."""


def _reply_text(error: redis_errors.ResponseError) -> str:
    """The error reply's text as a Redis server sends it ("NOSCRIPT …", "BUSYGROUP …"), as
    PipelinedRedis raises it: the stores and the guard read its first word."""
    message = str(error)
    for kind, code in _STRIPPED_CODES:
        if isinstance(error, kind):
            return f"{code} {message}"
    if message.split(" ", 1)[0] in _KEPT_CODES:
        return message
    return f"ERR {message}"


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

    replicas: None = None
    """No replicas: settings.py refuses OTP_REDIS_MIN_REPLICAS without OTP_REDIS_URL."""

    def __init__(self, server: _Server | None = None) -> None:
        self._server = server if server is not None else _Server()
        self._client: FakeAsyncRedis | None = None
        self._closed = False

    def dedicated(self) -> "EmbeddedRedis":
        return EmbeddedRedis(self._server)

    def _connect(self) -> FakeAsyncRedis:
        # No socket timeout, which only sets a timer on every command here (`blocks_for` is a
        # Redis server's allowance for the network); RESP2, as PipelinedRedis speaks it (redis-py
        # would otherwise offer RESP3, whose maps and doubles come back in other shapes). A pool
        # (of one connection, as no command here waits but a blocking read): redis-py warns of a
        # single-connection client that is dropped without `aclose()`, as tests' stores are.
        client = FakeAsyncRedis(
            server=self._server.fake, version=REDIS_VERSION, socket_timeout=None, protocol=2
        )
        # The server's replies as they are (bytes, lists, None), not redis-py's per-command shapes.
        client.response_callbacks.clear()
        return client

    async def execute(self, *args: Arg, blocks_for: float = 0.0) -> Any:
        if self._closed:
            raise ConnectionError("client closed")
        if self._client is None:
            self._client = self._connect()
        name, *fields = _scripted(args, self._server)
        try:
            reply = self._client.execute_command(name, *(_field(field) for field in fields))  # type: ignore[no-untyped-call]
            return await reply
        except redis_errors.ResponseError as exc:
            raise ReplyError(_reply_text(exc)) from None

    async def aclose(self) -> None:
        self._closed = True
        if self._client is not None:
            await self._client.aclose()
            self._client = None

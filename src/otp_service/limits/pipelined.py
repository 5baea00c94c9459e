"""One pipelined Redis connection for the request path's Lua scripts.

Every send and verify is one EVALSHA. Through redis-py's asyncio client that call cost ~190 µs
of CPU (pool checkout, command packing, the parser's read loop, the retry wrapper); written
straight to one shared connection (the commands of one event-loop turn in one write) and read
back by hiredis's C parser it costs ~25 µs (bench in the README). Redis answers the commands
of a connection in order, so replies are matched to callers first-in first-out, and any number
of requests share the connection without waiting for each other.

Failure is never silent and never a hang: a lost connection fails every pending call with
ConnectionError (the next call reconnects, so a restarted Redis needs no restart here); a
connection that stops answering fails them with TimeoutError once the oldest call has waited
`timeout` seconds (one timer per connection, not one per call) and is dropped. Both are OSError
subclasses, which the store turns into 503 `unavailable`.

Plain TCP (`redis://`) only: `rediss://`, `unix://` and Redis Cluster stay on redis-py
(runtime.create_script_client).
"""

import asyncio
import collections
import contextlib
import time
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import urlsplit

import hiredis
from redis.connection import parse_url
from redis.exceptions import ResponseError

Arg = bytes | str | int


def _pack(args: tuple[Arg, ...]) -> bytes:
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]  # the stub allows one element
    return packed


class _Connection(asyncio.Protocol):
    def __init__(self, timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._interval = min(0.1, timeout / 4)
        self._reader = hiredis.Reader()
        self._pending: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._outgoing: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass it
        self._timer = self._loop.call_later(self._interval, self._watch)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self.abort(ConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not self._pending:
                self.abort(ConnectionError("Redis sent a reply nobody asked for"))
                return
            future, _ = self._pending.popleft()
            if future.done():  # the caller was cancelled; its reply is dropped in order
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(ResponseError(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._close(ConnectionError("Redis closed the connection"))

    def call(self, packed: bytes) -> "asyncio.Future[Any]":
        if self.closed or self._transport is None:
            raise ConnectionError("Redis connection is closed")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._pending.append((future, time.monotonic()))
        # Commands issued in one turn of the event loop leave in one write (one syscall), at
        # the start of the next turn.
        if not self._outgoing:
            self._loop.call_soon(self._flush)
        self._outgoing.append(packed)
        return future

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if outgoing and not self.closed and self._transport is not None:
            self._transport.write(outgoing[0] if len(outgoing) == 1 else b"".join(outgoing))

    def _watch(self) -> None:
        if self.closed:
            return
        if self._pending and time.monotonic() - self._pending[0][1] > self._timeout:
            self.abort(TimeoutError(f"Redis did not answer within {self._timeout:g} s"))
            return
        self._timer = self._loop.call_later(self._interval, self._watch)

    def abort(self, exc: Exception) -> None:
        """Fail every pending call with `exc` and drop the connection."""
        self._close(exc)
        if self._transport is not None:
            self._transport.abort()

    def _close(self, exc: Exception) -> None:
        self.closed = True
        self._outgoing.clear()
        if self._timer is not None:
            self._timer.cancel()
        while self._pending:
            future, _ = self._pending.popleft()
            if not future.done():
                future.set_exception(exc)


class PipelinedRedis:
    """Commands on one shared connection, opened on first use and reopened after a failure."""

    def __init__(
        self,
        host: str,
        port: int = 6379,
        *,
        timeout: float,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._timeout = timeout
        self._handshake: list[tuple[Arg, ...]] = []
        if password is not None:
            self._handshake.append(("AUTH", username, password) if username else ("AUTH", password))
        if db:
            self._handshake.append(("SELECT", db))
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._closed = False

    @classmethod
    def from_url(cls, url: str, *, timeout: float) -> "PipelinedRedis":
        if urlsplit(url).scheme != "redis":
            raise ValueError("PipelinedRedis speaks plain TCP only (redis://)")
        params: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        return cls(
            params.get("host", "localhost"),
            int(params.get("port", 6379)),
            timeout=timeout,
            db=int(params.get("db", 0)),
            username=params.get("username"),
            password=params.get("password"),
        )

    async def execute(self, *args: Arg) -> Any:
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connect()
        return await conn.call(_pack(args))

    async def evalsha(self, sha: str, source: str, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """EVALSHA; on NOSCRIPT (Redis restarted or flushed its scripts), EVAL, which loads it."""
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.execute("EVAL", source, len(keys), *keys, *args)

    async def _connect(self) -> _Connection:
        if self._closed:
            raise ConnectionError("client closed")
        # Every caller that finds no connection awaits one shared attempt: with Redis
        # unreachable, a burst of requests costs one connect timeout, not one each in turn.
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.get_running_loop().create_task(self._open())
            # Retrieved here too, so a failed attempt whose callers all went away logs nothing.
            self._connecting.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await asyncio.shield(self._connecting)

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._timeout):
            _, conn = await loop.create_connection(lambda: _Connection(self._timeout), self._host, self._port)
            try:
                for command in self._handshake:
                    await conn.call(_pack(command))
            except BaseException:
                conn.abort(ConnectionError("Redis handshake failed"))
                raise
        self._conn = conn
        return conn

    async def aclose(self) -> None:
        self._closed = True
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        if self._conn is not None:
            self._conn.abort(ConnectionError("client closed"))
            self._conn = None

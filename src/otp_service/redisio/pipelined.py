"""The service's Redis transport: commands pipelined on one shared connection.

Every Lua script and every stream command of the delivery queue runs through `PipelinedRedis`.
Redis answers the commands of a connection in order, so replies are matched to callers
first-in first-out and any number of callers share the connection without waiting for each
other; the commands of one event-loop turn leave in one write, and hiredis's C parser reads the
replies. It was chosen over redis-py, coredis and valkey-glide by measurement
(`python -m bench.redis_clients`; the figures are in the README's "Performance" section).

Failure is never silent and never a hang: a lost connection fails every pending call with
ConnectionError (the next call reconnects, so a restarted Redis needs no restart here); a
connection on which the oldest call is past its deadline (`timeout`, plus the block time of a
blocking read) fails every pending call with TimeoutError and is dropped. One watchdog timer per
connection, not one per call. Both are OSError subclasses, which `redis_guard` turns into 503.

Plain TCP, TLS (`rediss://`) and unix sockets (`unix://`); Redis Cluster through cluster.py; the
primary named by Redis Sentinel through sentinel.py, found again on every reconnect. A READONLY
reply (the server was demoted to a replica by a failover) drops the connection too, so the next
call goes to the primary of now. With OTP_REDIS_MIN_REPLICAS, `replicas` is the wait a durable
script makes after its write (replication.py), on a connection of its own.
"""

import asyncio
import collections
import contextlib
import ssl as ssl_module
import time
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

from otp_service.redisio.client import Arg, ReplyError
from otp_service.redisio.cluster import key_slot, redirection, slot_owner
from otp_service.redisio.keys import RedisKeys
from otp_service.redisio.replication import WAIT_CONNECTIONS, ReplicaWait, mark_key
from otp_service.redisio.sentinel import NoPrimary, Sentinels, is_primary

MAX_REDIRECTIONS = 5
"""MOVED/ASK replies followed for one call: a slot's nodes disagree only briefly while it moves."""


def _pack(args: Sequence[Arg]) -> bytes:
    packed: bytes = hiredis.pack_command(tuple(args))  # type: ignore[arg-type]  # the stub allows one element
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
        self._retiring = False
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
            if not future.done():  # else the caller was cancelled; its reply is dropped in order
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(ReplyError(str(reply)))
                else:
                    future.set_result(reply)
            if self._retiring and not self._pending:  # its last reply delivered
                self.abort(ConnectionError("retired"))
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self._close(ConnectionError("Redis closed the connection"))

    def call(self, packed: bytes, blocks_for: float = 0.0) -> "asyncio.Future[Any]":
        if self.closed or self._transport is None:
            raise ConnectionError("Redis connection is closed")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._pending.append((future, time.monotonic() + self._timeout + blocks_for))
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
        if self._pending and time.monotonic() > self._pending[0][1]:
            self.abort(TimeoutError(f"Redis did not answer within {self._timeout:g} s"))
            return
        self._timer = self._loop.call_later(self._interval, self._watch)

    def retire(self) -> None:
        """No new calls (the client has another connection); close once the pending ones are
        answered."""
        self._retiring = True
        if not self._pending:
            self.abort(ConnectionError("retired"))

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
        host: str = "127.0.0.1",
        port: int = 6379,
        *,
        timeout: float,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        tls: ssl_module.SSLContext | None = None,
        unix_path: str | None = None,
        cluster_slot: int | None = None,
        sentinels: Sentinels | None = None,
    ) -> None:
        self._seed = (host, port)
        self._target = (host, port)
        self._timeout = timeout
        self._tls = tls
        self._unix_path = unix_path
        self._cluster_slot = cluster_slot
        self._sentinels = sentinels
        self.replicas: ReplicaWait | None = None
        """Set by open_redis with OTP_REDIS_MIN_REPLICAS; a dedicated() client has none."""
        self._options = {"db": db, "username": username, "password": password}
        self._handshake: list[tuple[Arg, ...]] = []
        if password is not None:
            self._handshake.append(("AUTH", username, password) if username else ("AUTH", password))
        if db:
            self._handshake.append(("SELECT", db))
        self._conn: _Connection | None = None
        self._side: dict[tuple[str, int], asyncio.Task[_Connection]] = {}
        self._connecting: asyncio.Task[_Connection] | None = None
        self._closed = False

    @classmethod
    def from_url(
        cls, url: str, *, timeout: float, cluster_key: str | None = None, sentinels: Sentinels | None = None
    ) -> "PipelinedRedis":
        """`redis://[[user]:password@]host[:port][/db]`, `rediss://…` (TLS, verified as usual),
        `unix:///path?db=N`. With `cluster_key`, the node owning that key's slot is used; with
        `sentinels`, the primary they name (the URL's host is then not used)."""
        parts = urlsplit(url)
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        query = parse_qs(parts.query)
        if parts.scheme == "unix":
            db = int(query.get("db", ["0"])[0])
            return cls(timeout=timeout, db=db, username=username, password=password, unix_path=parts.path)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"not a Redis URL: {parts.scheme}://")
        path_db = parts.path.strip("/")
        db = int(path_db) if path_db else int(query.get("db", ["0"])[0])
        return cls(
            parts.hostname or "127.0.0.1",
            parts.port or 6379,
            timeout=timeout,
            db=db,
            username=username,
            password=password,
            tls=ssl_module.create_default_context() if parts.scheme == "rediss" else None,
            cluster_slot=key_slot(cluster_key) if cluster_key is not None else None,
            sentinels=sentinels,
        )

    def dedicated(self) -> "PipelinedRedis":
        """Another connection with the same settings: blocking reads take one of their own,
        so that nothing queues behind them."""
        other = PipelinedRedis(
            *self._seed, timeout=self._timeout, tls=self._tls, unix_path=self._unix_path,
            cluster_slot=self._cluster_slot, sentinels=self._sentinels,
            **self._options,  # type: ignore[arg-type]
        )  # fmt: skip
        other._target = self._target
        return other

    async def execute(self, *args: Arg, blocks_for: float = 0.0) -> Any:
        """One command; `blocks_for` (seconds) extends the deadline of a blocking command."""
        packed = _pack(args)
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connect()
        asking = False
        for _ in range(MAX_REDIRECTIONS):
            try:
                if not asking:
                    return await conn.call(packed, blocks_for)
                ask = conn.call(_pack(("ASKING",)))
                answer = conn.call(packed, blocks_for)  # in the same write as ASKING: adjacent
                await ask
                return await answer
            except ReplyError as exc:
                redirect = redirection(str(exc))
                if redirect is None:
                    if str(exc).startswith("READONLY"):
                        self._drop(conn)  # a demoted primary: the next call finds the new one
                    raise
            # Redis Cluster: a redirection is followed for this call alone; the calls in flight
            # on the shared connection are answered there, each following its own.
            kind, node = redirect
            asking = kind == "ASK"
            if asking:  # the slot is migrating: this command, on the importing node
                conn = await self._side_connection(node)
                continue
            if node != self._target:  # MOVED (failover, resharding): the slot lives there now
                self._target = node
                old, self._conn = self._conn, None
                if old is not None:
                    old.retire()
            conn = self._conn if self._conn is not None and not self._conn.closed else await self._connect()
        raise ConnectionError(f"Redis Cluster redirected a call {MAX_REDIRECTIONS} times")

    async def pipeline(self, *commands: Sequence[Arg], blocks_for: float = 0.0) -> list[Any]:
        """Several commands in one write, in order, on this client's connection; their replies
        (an error reply raises ReplyError, after every reply has come back). No Cluster
        redirection is followed: for a connection of its own (`dedicated()`)."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connect()
        calls = [conn.call(_pack(command), blocks_for) for command in commands]
        replies = await asyncio.gather(*calls, return_exceptions=True)
        for reply in replies:
            if isinstance(reply, ReplyError) and str(reply).startswith("READONLY"):
                self._drop(conn)
            if isinstance(reply, BaseException):
                raise reply
        return replies

    def _drop(self, conn: _Connection) -> None:
        """No more calls on `conn` (its pending ones are still answered); the next call connects
        again, through the sentinels when there are some."""
        if self._conn is conn:
            self._conn = None
            conn.retire()

    async def _side_connection(self, node: tuple[str, int]) -> "_Connection":
        """A connection to another node, for ASK redirections (kept until the client closes);
        the callers redirected at once share one attempt to open it."""
        opening = self._side.get(node)
        if opening is None or (
            opening.done()
            and (opening.cancelled() or opening.exception() is not None or opening.result().closed)
        ):
            opening = self._side[node] = asyncio.get_running_loop().create_task(self._dial_within(node))
            opening.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await asyncio.shield(opening)

    async def _dial_within(self, node: tuple[str, int]) -> "_Connection":
        async with asyncio.timeout(self._timeout):
            return await self._dial(*node)

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

    async def _dial(self, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        factory = lambda: _Connection(self._timeout)  # noqa: E731
        if self._unix_path is not None:
            _, conn = await loop.create_unix_connection(factory, self._unix_path)
        else:
            server_name = host if self._tls is not None else None
            _, conn = await loop.create_connection(
                factory, host, port, ssl=self._tls, server_hostname=server_name
            )
        try:
            for command in self._handshake:
                await conn.call(_pack(command))
        except BaseException:
            conn.abort(ConnectionError("Redis handshake failed"))
            raise
        return conn

    async def _open(self) -> _Connection:
        if self._sentinels is not None:  # each sentinel asked is bounded by the timeout itself
            self._target = await self._sentinels.primary()
        async with asyncio.timeout(self._timeout):
            conn = await self._dial(*self._target)
            if self._sentinels is not None and not is_primary(await conn.call(_pack(("ROLE",)))):
                # A sentinel that has not seen the failover yet: never write to a replica.
                conn.abort(ConnectionError("not the primary"))
                raise NoPrimary("the server the sentinels named is not the primary (yet)")
            if self._cluster_slot is not None and self._target == self._seed:
                slots = await conn.call(_pack(("CLUSTER", "SLOTS")))
                owner = slot_owner(slots, self._cluster_slot, self._seed[0])
                if owner is not None and owner != self._target:
                    conn.abort(ConnectionError("not the slot's owner"))
                    self._target = owner
                    conn = await self._dial(*owner)
        self._conn = conn
        return conn

    async def aclose(self) -> None:
        self._closed = True
        if self.replicas is not None:
            await self.replicas.aclose()
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        if self._conn is not None:
            self._conn.abort(ConnectionError("client closed"))
            self._conn = None
        for opening in self._side.values():
            if not opening.done():
                opening.cancel()
                with contextlib.suppress(BaseException):
                    await opening
            elif not opening.cancelled() and opening.exception() is None:
                opening.result().abort(ConnectionError("client closed"))
        self._side.clear()


def open_redis(
    url: str, keys: RedisKeys, *, timeout: float, cluster: bool = False,
    sentinels: list[tuple[str, int]] | None = None, sentinel_master: str | None = None,
    min_replicas: int = 0, replica_timeout: float = 0.2,
) -> PipelinedRedis:  # fmt: skip
    """The service's client: OTP_REDIS_URL's server (or the primary the sentinels name), and with
    `min_replicas` the replicas its durable scripts wait for."""
    client = PipelinedRedis.from_url(
        url, timeout=timeout, cluster_key=keys.jobs if cluster else None,
        sentinels=Sentinels(sentinels, sentinel_master, timeout=timeout)
        if sentinels and sentinel_master else None,
    )  # fmt: skip
    if min_replicas:
        client.replicas = ReplicaWait(
            [client.dedicated() for _ in range(WAIT_CONNECTIONS)], mark_key(keys),
            replicas=min_replicas, timeout=replica_timeout,
        )  # fmt: skip
    return client

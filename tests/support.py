"""Helpers shared by test modules."""

import asyncio
import contextlib
import json
import random
import re
import secrets
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hiredis
import pytest
from aiohttp import web

from otp_service.delivery.queue import RedisJobQueue
from otp_service.limits.send_rate import RedisSendRate
from otp_service.redisio import EmbeddedRedis, PipelinedRedis, RedisKeys

_EMAIL_BLOCK = re.compile(
    r"===== otp-service console email (?P<id>\S+) =====\n.*?^To: (?P<to>\S+)\n.*?"
    r"Your verification code is: (?P<code>\d+)\n.*?===== end of email (?P=id) =====",
    re.S | re.M,
)


@dataclass(frozen=True)
class SentEmail:
    to: str
    code: str


def console_emails(output: str) -> list[SentEmail]:
    """Emails the console provider printed."""
    return [SentEmail(m["to"], m["code"]) for m in _EMAIL_BLOCK.finditer(output)]


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def drain(app: Any, timeout: float = 10.0) -> None:
    """Wait until the delivery queue of an app (conftest.AppClient) holds nothing unacknowledged."""
    async with asyncio.timeout(timeout):
        while True:
            stats = (await app.web.usage.live()).queue
            if stats.waiting == 0 and stats.pending == 0:
                return
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def redis_queue(key_prefix: str) -> AsyncIterator[RedisJobQueue]:
    """The delivery queue of the test Redis's key space `key_prefix`, on a client of its own."""
    from tests.conftest import REDIS_URL

    client = PipelinedRedis.from_url(REDIS_URL, timeout=5)
    queue = RedisJobQueue(client, RedisKeys(key_prefix))
    try:
        yield queue
    finally:
        await queue.aclose()
        await client.aclose()


def embedded_send_rate(rate: int) -> RedisSendRate:
    """The service-wide send-rate bucket on an in-memory Redis of its own (the embedded default's)."""
    return RedisSendRate(EmbeddedRedis(), RedisKeys("sendrate"), rate=rate)


@dataclass(frozen=True)
class ProviderCall:
    """One POST /emails the provider fake answered."""

    to: str
    status: int
    message_id: str | None  # the id it answered with (None for a failure)
    code: str | None  # the code the email's text carried
    sender: str = ""  # the email's From
    text: str = ""  # the email's text part


@dataclass
class ProviderFake:
    """Resend's POST /emails on a real HTTP server on loopback (aiohttp), which the service's own
    provider client calls (OTP_RESEND_API_URL = `url`): the provider at its HTTP boundary.

    `failing`: every call answers 503 (Resend's `unavailable`, retryable, no Retry-After) until
    recover() (never, for a provider that keeps failing until the worker gives up). `latency`:
    each answer waits a uniform draw from this range (s), as a real provider's does. Every call
    is kept in `calls`; `failed` is set at the first failed answer."""

    failing: bool = False
    latency: tuple[float, float] = (0.0, 0.0)
    calls: list[ProviderCall] = field(default_factory=list)
    failed: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _runner: web.AppRunner | None = None

    def recover(self) -> None:
        self.failing = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _emails(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        to = body["to"][0] if isinstance(body["to"], list) else body["to"]
        found = re.search(r"Your verification code is: (\d+)", body.get("text", ""))
        if (wait := random.uniform(*self.latency)) > 0:
            await asyncio.sleep(wait)
        if self.failing:
            self.calls.append(ProviderCall(to, 503, None, found[1] if found else None))
            self.failed.set()
            return web.json_response(
                {"statusCode": 503, "name": "unavailable", "message": "down"}, status=503
            )
        message_id = f"re-{secrets.token_hex(8)}"
        self.calls.append(
            ProviderCall(to, 200, message_id, found[1] if found else None, body["from"], body.get("text", ""))
        )
        return web.json_response({"id": message_id})

    def sent_to(self, email: str) -> list[ProviderCall]:
        """The calls for `email` that the provider took."""
        return [c for c in self.calls if c.to == email and c.status == 200]

    async def __aenter__(self) -> "ProviderFake":
        app = web.Application()
        app.router.add_post("/emails", self._emails)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", free_port())
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def unique_email(domain: str = "example.org") -> str:
    return f"user-{secrets.token_hex(4)}@{domain}"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**overrides: str) -> dict[str, str]:
    """The test process's environment without any OTP_ setting, plus `overrides`."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("OTP_")}
    env.update(overrides)
    return env


class ServiceProcess:
    """`otp-service serve` in a child process; stdout and stderr go to files in `workdir`."""

    def __init__(self, env: dict[str, str], workdir: "Path", name: str = "svc", *args: str) -> None:
        import subprocess
        import sys

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = workdir / f"{name}.out"
        self.err = workdir / f"{name}.err"
        self._files = [self.out.open("w"), self.err.open("w")]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "otp_service", "serve", "--port", str(self.port), *args],
            env=env, cwd=workdir, stdout=self._files[0], stderr=self._files[1],
        )  # fmt: skip

    def wait_ready(self, path: str = "/readyz", timeout: float = 30) -> None:
        import time

        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.err.read_text()
            try:
                if httpx.get(self.url + path, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"service did not become ready: {self.err.read_text()[-2000:]}")

    def stop(self) -> None:
        import subprocess

        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for f in self._files:
            f.close()

    def __enter__(self) -> "ServiceProcess":
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def service_env(database_url: str, key_prefix: str, **overrides: str) -> dict[str, str]:
    """The environment of a child `otp-service` in the production shape (PostgreSQL + Redis)."""
    from tests.conftest import REDIS_URL, TEST_SECRET

    return clean_env(
        OTP_DATABASE_URL=database_url, OTP_REDIS_URL=REDIS_URL, OTP_REDIS_KEY_PREFIX=key_prefix,
        OTP_SECRET_KEY=TEST_SECRET, OTP_CHECK_DELIVERABILITY="false",
        # Named: the console provider is the default only in the embedded default (CONTRACT §6).
        # The shared test database holds other tests' bounces (conftest.make_settings says why).
        **{"OTP_EMAIL_PROVIDER": "console", "OTP_REPUTATION_SOURCE_LIMIT": "1000000", **overrides},
    )  # fmt: skip


class Proxy:
    """A TCP proxy the test controls, in front of PostgreSQL or Redis: cut it (every connection
    closed, new ones refused), stall it (answers held back: the server looks hung), and count
    the Redis commands that pass through it (parsed, so a pipeline counts each command)."""

    def __init__(self, host: str, port: int, *, count_redis_commands: bool = False) -> None:
        self.upstream = (host, port)
        self._count = count_redis_commands
        self.port = free_port()
        self.commands = 0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        commands = hiredis.Reader() if up and self._count else None
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                if commands is not None:
                    commands.feed(data)
                    while commands.gets() is not False:
                        self.commands += 1
                if not up:
                    await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self._conns |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer, up=True), self._pipe(up_reader, writer, up=False))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in self._conns:
            w.close()
        self._conns.clear()


class DelayedLink(Proxy):
    """A Proxy that holds every chunk `delay` seconds each way, in order: a replication link across
    a network (a replica `--replicaof` its port). stall() holds everything (a replica that stops
    acknowledging); cut() also drops what the link held, as a host that dies takes its unsent data
    with it."""

    def __init__(self, host: str, port: int, *, delay: float) -> None:
        super().__init__(host, port)
        self.delay = delay
        self._pipes: set[asyncio.Task[None]] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        loop = asyncio.get_running_loop()
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def forward() -> None:
            while True:
                due, data = await held.get()
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()

        forwarding = asyncio.ensure_future(forward())
        self._pipes.add(forwarding)
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                held.put_nowait((loop.time() + self.delay, data))
            while not held.empty():  # the peer closed: what was held still arrives
                await asyncio.sleep(self.delay)
        forwarding.cancel()
        self._pipes.discard(forwarding)
        writer.close()

    async def cut(self) -> None:
        for forwarding in self._pipes:
            forwarding.cancel()
        self._pipes.clear()
        for w in self._conns:
            w.transport.abort()  # not close(): nothing held is flushed
        await super().cut()


def only_otp_settings(monkeypatch: pytest.MonkeyPatch, settings: dict[str, str]) -> None:
    """This process's environment with `settings` as its only OTP_ variables, as a child given
    clean_env(**settings) would see it."""
    import os

    for name in [k for k in os.environ if k.startswith("OTP_")]:
        monkeypatch.delenv(name)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)


def exit_status_in_process(entry_point: Callable[[], object], monkeypatch: pytest.MonkeyPatch) -> object:
    """Runs an entry point of the service in this process (otp_service.cli.main with its arguments,
    what `python -m otp_service` runs; or app.create_app_from_env, what uvicorn's --factory
    calls) and returns what the process would exit with: main's return, or the code of the
    SystemExit it raised (a message, which the interpreter prints on stderr, exits 1).

    For the tests of a refusal at start-up, whose claim is what the entry point decides and
    prints: should it not refuse, it stops at the server, the worker's loop or the migration
    (an AssertionError) instead of running one inside the tests."""
    import inspect

    import uvicorn
    import uvloop

    from otp_service.db import migrate

    def started(*args: Any, **kwargs: Any) -> None:
        for arg in args:  # the worker's coroutine, never to run
            if inspect.iscoroutine(arg):
                arg.close()
        raise AssertionError("the entry point started instead of refusing")

    monkeypatch.setattr(uvicorn, "run", started)
    monkeypatch.setattr(uvloop, "run", started)
    monkeypatch.setattr(migrate, "upgrade", started)
    try:
        return entry_point()
    except SystemExit as exc:
        return exc.code


class QuietHandler(BaseHTTPRequestHandler):
    """A loopback test server's request handler: `answer` writes a whole response; nothing is logged."""

    def answer(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ThreadedServer:
    """An HTTP server on loopback in a thread of its own, so that it answers a service running in
    another process whatever the test is doing (blocking waits included)."""

    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

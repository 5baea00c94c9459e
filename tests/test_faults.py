"""Fault injection: a provider that hangs or talks garbage, a client that trickles its request,
PostgreSQL going away under load (through a TCP proxy the test can cut)."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from otp_service.delivery.providers.base import OutgoingEmail, RetryableError
from otp_service.delivery.providers.console import ConsoleProvider
from otp_service.delivery.providers.resend import ResendProvider
from otp_service.delivery.sender import Deliverer
from otp_service.settings import Settings
from tests.conftest import PG_HOST, PG_PORT
from tests.support import Proxy, ServiceProcess, embedded_send_rate, service_env, unique_email

EMAIL = OutgoingEmail(
    to="a@example.org", sender="s@example.com", subject="s", text="t", html="h", idempotency_key="k"
)


@contextlib.asynccontextmanager
async def silent_server(reply: bytes | None = None) -> AsyncIterator[int]:
    """Accepts connections, reads, and either never answers or answers `reply` and closes."""
    held: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with contextlib.suppress(Exception):
            await reader.read(65536)
            if reply is not None:
                writer.write(reply)
                await writer.drain()
                writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


async def test_provider_hanging_past_its_timeout_is_retryable_and_fails_over() -> None:
    async with silent_server() as port, httpx.AsyncClient() as http:
        resend = ResendProvider(http, api_url=f"http://127.0.0.1:{port}", api_key="k", timeout=0.5)
        started = time.monotonic()
        with pytest.raises(RetryableError, match="timeout"):
            await resend.send(EMAIL)
        assert time.monotonic() - started < 2
        import io

        out = io.StringIO()
        deliverer = Deliverer(settings=Settings(provider_timeout=0.5), primary=resend, fallback=ConsoleProvider(out),
                              send_rate=embedded_send_rate(100))  # fmt: skip
        sent = await deliverer.send_template("email_otp", "a@example.org", "123456", idempotency_key="k",
                                             deadline=time.time() + 10)  # fmt: skip
        assert sent.provider == "console"


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{}",
    ],
)
async def test_provider_talking_garbage_is_retryable(reply: bytes) -> None:
    async with silent_server(reply) as port, httpx.AsyncClient() as http:
        resend = ResendProvider(http, api_url=f"http://127.0.0.1:{port}", api_key="k", timeout=2)
        with pytest.raises(RetryableError):
            await resend.send(EMAIL)


def test_a_trickling_client_does_not_block_others(database_url: str, key_prefix: str, tmp_path: Path) -> None:
    import socket

    env = service_env(
        database_url, key_prefix, )  # fmt: skip
    with ServiceProcess(env, tmp_path) as service:
        slow = [socket.create_connection(("127.0.0.1", service.port)) for _ in range(20)]
        try:
            for s in slow:
                s.sendall(b"POST /api/v1/auth/otp/send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 40\r\n\r\n{\"em")  # fmt: skip
            timings = []
            for _ in range(10):
                started = time.monotonic()
                assert httpx.get(f"{service.url}/healthz", timeout=5).status_code == 200
                timings.append(time.monotonic() - started)
                for s in slow:
                    s.sendall(b" ")
            assert max(timings) < 0.5, timings
        finally:
            for s in slow:
                s.close()


async def test_postgresql_down_webhooks_503_and_delivery_waits_then_delivers(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from tests.support import console_emails, drain
    from tests.test_resend_webhooks import SECRET, event, signed

    proxy = Proxy(PG_HOST, PG_PORT)
    await proxy.start()
    db = database_url.rsplit("/", 1)[1]
    settings = make_settings(
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{proxy.port}/{db}", resend_webhook_secret=SECRET,
        conversion_min_sends=1_000_000, throttle_rates={"otp_send": "1000/minute", "otp_verify": "1000/minute", "otp_send_subnet": "1000/minute", "otp_verify_subnet": "1000/minute"},
    )  # fmt: skip
    try:
        async with open_app(settings) as app:
            email = unique_email()
            await proxy.cut()
            # Sending needs only Redis: still accepted, and the job waits for the database.
            assert (await app.http.post("/api/v1/auth/otp/send", json={"email": email})).status_code == 202
            body, headers = signed(event("email.bounced", unique_email()))
            res = await app.http.post("/api/v1/auth/resend-events/", content=body, headers=headers)
            assert (res.status_code, res.json()["code"]) == (503, "unavailable")
            ready = await app.http.get("/readyz")
            assert (ready.status_code, ready.json()["checks"]["database"]) == (503, "down")
            await asyncio.sleep(1.5)
            assert console_emails(capsys.readouterr().out) == []  # not sent without the suppression check
            await proxy.start()
            await drain(app, timeout=20)
            assert [e.to for e in console_emails(capsys.readouterr().out)] == [email]
            res = await app.http.post("/api/v1/auth/resend-events/", content=body, headers=headers)
            assert res.status_code == 200
    finally:
        await proxy.cut()

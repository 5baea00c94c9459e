"""A provider pause holds back only what it must (CONTRACT §6): `sending_paused` is set only when
no healthy provider is left (a healthy fallback takes the jobs instead), and a job a remembered
source requested (stream field r) or a captcha vouched for (v) is delivered through the preferred
provider even while every provider is paused."""

import io
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from otp_service.assembly import open_infrastructure
from otp_service.delivery.jobs import JobContent, JobSealer
from otp_service.delivery.providers.console import ConsoleProvider
from otp_service.delivery.providers.resend import ResendProvider
from otp_service.delivery.queue import CAPTCHA, EXPIRES_MS, PAYLOAD, REMEMBERED, RedisJobQueue
from otp_service.delivery.repository import DeliveryOutcome
from otp_service.delivery.sender import Deliverer
from otp_service.redisio import EmbeddedRedis, RedisClient, RedisKeys
from otp_service.sealing import Sealer
from otp_service.settings import Settings
from tests.support import console_emails, drain, embedded_send_rate, redis_queue, unique_email
from tests.test_remembered_sources import WIDE
from tests.test_worker import one_job_worker

SEND = "/api/v1/auth/otp/send"
VERIFY = "/api/v1/auth/otp/verify"
PROXY, HOME = "203.0.113.7", "198.51.100.23"


@pytest.mark.parametrize("store", ["redis", "embedded"])
async def test_the_jobs_flags_are_read_from_the_stream(key_prefix: str, store: str) -> None:
    async def add_and_read(
        queue: RedisJobQueue, redis: RedisClient, keys: RedisKeys
    ) -> list[tuple[bool, bool]]:
        await queue.ensure_ready()
        expires = int(time.time() * 1000) + 60_000
        for flags in ([], [REMEMBERED, b"1"], [CAPTCHA, b"1"], [REMEMBERED, b"1", CAPTCHA, b"1"]):
            await redis.execute("XADD", keys.jobs, "*", PAYLOAD, b"sealed", EXPIRES_MS, expires, *flags)
        return [(j.remembered, j.captcha) for j in await queue.read("c", 10, block_ms=100)]

    if store == "redis":
        async with redis_queue(key_prefix) as queue:
            from otp_service.redisio import PipelinedRedis
            from tests.conftest import REDIS_URL

            client = PipelinedRedis.from_url(REDIS_URL, timeout=5)
            try:
                found = await add_and_read(queue, client, RedisKeys(key_prefix))
            finally:
                await client.aclose()
    else:
        embedded, keys = EmbeddedRedis(), RedisKeys("flags")
        found = await add_and_read(RedisJobQueue(embedded, keys), embedded, keys)
    assert found == [(False, False), (True, False), (False, True), (True, True)]


class FakeResend:
    def __init__(self) -> None:
        self.calls = 0

    def provider(self) -> ResendProvider:
        def handler(request: httpx.Request) -> httpx.Response:
            self.calls += 1
            return httpx.Response(200, json={"id": f"re-{self.calls}"})

        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        return ResendProvider(client, api_url="https://r.test", api_key="k", timeout=5)


@pytest.mark.parametrize(
    ("healthy", "flags", "outcome", "provider"),
    [
        ({"console"}, set(), DeliveryOutcome.SENT, "console"),  # the primary paused: the fallback takes it
        (set(), {"r"}, DeliveryOutcome.SENT, "resend"),  # every provider paused
        (set(), {"v"}, DeliveryOutcome.SENT, "resend"),
        (set(), set(), DeliveryOutcome.EXPIRED, None),  # held until its code expires
        ({"resend", "console"}, set(), DeliveryOutcome.SENT, "resend"),
    ],
    ids=["fallback", "remembered-passes", "captcha-passes", "stranger-held", "none-paused"],
)  # fmt: skip
async def test_the_worker_routes_around_a_pause(
    make_settings: Callable[..., Settings], healthy: set[str], flags: set[str],
    outcome: DeliveryOutcome, provider: str | None,
) -> None:  # fmt: skip
    from otp_service.delivery.queue import Job

    settings = make_settings()
    sealer = JobSealer(Sealer(settings.secret))
    resend, out = FakeResend(), io.StringIO()

    async with open_infrastructure(settings) as infra:
        deliverer = Deliverer(
            settings=settings, primary=resend.provider(), fallback=ConsoleProvider(out),
            send_rate=embedded_send_rate(100), healthy=lambda name: name in healthy,
        )  # fmt: skip
        worker = one_job_worker(infra, deliverer)
        content = JobContent(
            email=unique_email(), code="123456", code_hash="h" * 64, address_id="a", locale="en"
        )
        expires = int((time.time() + 1) * 1000)
        job = Job("1-0", sealer.seal(content), expires, remembered="r" in flags, captcha="v" in flags)
        try:
            done = await worker.process(job)
        finally:
            await worker.aclose()
    assert (done.status, done.provider) == (outcome, provider)
    assert resend.calls == (provider == "resend")
    assert ("123456" in out.getvalue()) is (provider == "console")


async def test_sending_is_paused_only_when_no_healthy_provider_is_left(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'otp.db'}", worker_enabled=False,
                             conversion_min_sends=1_000_000, throttle_rates=WIDE)  # fmt: skip
    async with open_app(settings) as app:
        guard = app.web.reputation
        guard.providers = ["resend", "ses"]  # a primary and its fallback
        pauses = guard._pauses
        await pauses.pause("resend", "bounce rate 9% over 4%", int(time.time() * 1000))
        await guard.check()
        assert not guard.healthy("resend")
        assert guard.healthy("ses")
        assert (await app.http.post(SEND, json={"email": unique_email()})).status_code == 202
        await pauses.pause("ses", "bounce rate 9% over 4%", int(time.time() * 1000))
        await guard.check()
        res = await app.http.post(SEND, json={"email": unique_email()})
        assert (res.status_code, res.json()["code"]) == (503, "sending_paused")


@pytest.mark.parametrize("store", [{}, {"redis_url": None}], ids=["redis", "embedded"])
async def test_a_remembered_source_gets_its_code_while_every_provider_is_paused(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str],
    store: dict[str, Any],
) -> None:  # fmt: skip
    settings = make_settings(trusted_proxies=[f"{PROXY}/32"], conversion_min_sends=1_000_000, throttle_rates=WIDE,
                             rate_limit_ttl=0, **store)  # fmt: skip
    email = f"user-{secrets.token_hex(4)}@example.org"
    async with open_app(settings) as app:
        home = {"x-forwarded-for": HOME}
        assert (await app.http.post(SEND, json={"email": email}, headers=home)).status_code == 202
        await drain(app)
        [sent] = console_emails(capsys.readouterr().out)
        verified = await app.http.post(VERIFY, json={"email": email, "code": sent.code}, headers=home)
        assert verified.status_code == 200
        guard = app.web.reputation
        await guard._pauses.pause("console", "complaint rate 1% over 0.08%", int(time.time() * 1000))
        await guard.check()
        assert not guard.healthy("console")
        stranger = await app.http.post(
            SEND, json={"email": unique_email()}, headers={"x-forwarded-for": "192.0.2.9"}
        )
        assert (stranger.status_code, stranger.json()["code"]) == (503, "sending_paused")
        assert (await app.http.post(SEND, json={"email": email}, headers=home)).status_code == 202
        await drain(app)
        assert [e.to for e in console_emails(capsys.readouterr().out)] == [email]

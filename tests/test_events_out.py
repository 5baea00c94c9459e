"""Events out (CONTRACT §7): every event verified with the svix library's Webhook.verify, against a
real receiver on loopback. Through the HTTP API on Redis and on the embedded default (codes sent
through Resend at its HTTP boundary, Resend's events Svix-signed back), with a receiver that fails
first; and the sender alone, on a clock of its own, against a receiver that is down for a while
and one that never answers."""

import asyncio
import itertools
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from aiohttp import web
from svix.webhooks import Webhook, WebhookVerificationError

from otp_service.events.outbox import EventOutbox, EventSeal, EventSender, next_attempt
from otp_service.redisio import PipelinedRedis, RedisKeys, open_redis
from otp_service.sealing import Sealer
from otp_service.settings import Settings
from tests.conftest import METRICS_AUTH, REDIS_URL
from tests.support import FakeClock, drain, free_port, unique_email
from tests.test_resend_webhooks import SECRET as RESEND_SECRET
from tests.test_resend_webhooks import signed

EVENTS_SECRET = "whsec_" + "ZXZlbnRzLW91dC1zZWNyZXQtZm9yLXRlc3RzIQ=="
VERIFY = "/api/v1/auth/otp/verify"
SEND = "/api/v1/auth/otp/send"


@dataclass
class Receiver:
    """The integrator's endpoint: keeps every request; answers `fail_first` of them 500."""

    fail_first: int = 0
    requests: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    port: int = 0
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((await request.read(), dict(request.headers)))
        if len(self.requests) <= self.fail_first:
            return web.Response(status=500)
        return web.Response(status=204)

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/hooks/otp", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port or free_port())
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/otp"

    def verified(self) -> list[dict[str, Any]]:
        """Every request as the integrator's code sees it: verified by svix, then parsed."""
        out = []
        for body, headers in self.requests:
            Webhook(EVENTS_SECRET).verify(body, headers)  # raises on a bad signature
            event = json.loads(body)
            event["webhook-id"] = headers["webhook-id"]
            out.append(event)
        return out

    async def wait_for(self, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        try:
            async with asyncio.timeout(timeout):
                while len(self.requests) < count:
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"{len(self.requests)} of {count} events arrived: {self.requests}") from None
        return self.verified()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


def resend_event(kind: str, email: str, message_id: str) -> tuple[bytes, dict[str, str]]:
    payload = {"type": kind, "created_at": "2026-12-01T10:00:00.000Z",
               "data": {"email_id": message_id, "from": "noreply@example.com", "to": [email], "subject": "code",
                        "created_at": "2026-12-01T10:00:00.000Z"}}  # fmt: skip
    if kind == "email.bounced":
        payload["data"]["bounce"] = {"message": "no such user", "type": "Permanent"}  # type: ignore[index]
    return signed(payload)


@pytest.mark.parametrize("store", [{}, {"redis_url": None}], ids=["redis", "embedded"])
async def test_every_event_reaches_the_integrator_signed_and_a_failure_is_retried(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], receiver: Receiver, tmp_path: Path,
    store: dict[str, Any], capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    if store:
        store = {**store, "database_url": f"sqlite+aiosqlite:///{tmp_path / 'otp.db'}"}
    receiver.fail_first = 1  # the first post answers 500: retried ~5 s after the event
    settings = make_settings(
        email_provider="resend", resend_api_key="re_test", resend_api_url="https://api.resend.test",
        resend_webhook_secret=RESEND_SECRET, events_webhook_url=receiver.url, events_webhook_secret=EVENTS_SECRET,
        throttle_rates={"otp_send": "100/minute", "otp_send_subnet": "100/minute"}, conversion_min_sends=1_000_000,
        **store,
    )  # fmt: skip
    sent: dict[str, tuple[str, str]] = {}  # address -> (message id, code)

    def resend(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["to"][0].startswith("refused-"):
            return httpx.Response(422, json={"name": "validation_error", "message": "refused"})
        message_id = f"re-{secrets.token_hex(6)}"
        sent[body["to"][0]] = (message_id, body["text"].split("Your verification code is: ")[1][:6])
        return httpx.Response(200, json={"id": message_id})

    with respx.mock(using="httpx") as mock:
        mock.route(host="otp.test").pass_through()
        mock.route(host="127.0.0.1").pass_through()  # the receiver
        mock.post("https://api.resend.test/emails").mock(side_effect=resend)
        async with open_app(settings) as app:
            before = (await app.http.get("/metrics", headers=METRICS_AUTH)).text
            user, bouncer, refused = unique_email(), unique_email(), f"refused-{unique_email()}"
            send_ids = {}
            for email in (user, bouncer, refused):
                res = await app.http.post(SEND, json={"email": email})
                assert res.status_code == 202
                send_ids[email] = res.json()["send_id"]
            await drain(app)
            assert (
                await app.http.post(VERIFY, json={"email": user, "code": sent[user][1]})
            ).status_code == 200
            for kind, email in (
                ("email.delivered", user),
                ("email.delivery_delayed", bouncer),
                ("email.bounced", bouncer),
                ("email.complained", user),
            ):
                body, headers = resend_event(kind, email, sent[email][0])
                assert (
                    await app.http.post("/api/v1/auth/resend-events/", content=body, headers=headers)
                ).status_code == 200
            events = await receiver.wait_for(9)
            await asyncio.sleep(0.3)  # the sender counts a post once its answer is read
            metrics = (await app.http.get("/metrics", headers=METRICS_AUTH)).text

    # 8 events in 9 posts: the first post failed, and the same event (the same webhook-id, the
    # same body) was posted again after about 5 s.
    assert len(events) == 9
    again = [e for e in events[1:] if e["webhook-id"] == events[0]["webhook-id"]]
    assert again == [events[0]]
    assert receiver.requests[0][0] == next(
        b for b, h in receiver.requests[1:] if h["webhook-id"] == events[0]["webhook-id"]
    )
    unique = {e["webhook-id"]: e for e in events}
    assert sorted(e["type"] for e in unique.values()) == sorted(
        [
            "otp.sent",
            "otp.sent",
            "otp.failed",
            "otp.verified",
            "otp.delivered",
            "otp.delayed",
            "otp.bounced",
            "otp.complained",
        ]
    )
    # Every event names the send it is about (CONTRACT §7), the provider's events and the verify
    # as the worker's.
    assert {(e["type"], e["data"]["email"]): e["data"]["send_id"] for e in unique.values()} == {
        (e["type"], e["data"]["email"]): send_ids[e["data"]["email"]] for e in unique.values()
    }
    sent_events = {e["data"]["email"]: e for e in unique.values() if e["type"] == "otp.sent"}
    assert set(sent_events) == {user, bouncer}
    assert sent_events[user]["data"]["message_id"] == sent[user][0]
    assert sent_events[user]["data"]["provider"] == "resend"
    job_id = sent_events[user]["data"]["job_id"]
    delivered = next(e for e in unique.values() if e["type"] == "otp.delivered")
    assert (delivered["data"]["email"], delivered["data"]["job_id"]) == (user, job_id)
    bounced = next(e for e in unique.values() if e["type"] == "otp.bounced")
    assert (bounced["data"]["email"], bounced["data"]["message_id"]) == (bouncer, sent[bouncer][0])
    failed = next(e for e in unique.values() if e["type"] == "otp.failed")
    assert (failed["data"]["email"], failed["data"]["outcome"]) == (refused, "failed")
    assert next(e for e in unique.values() if e["type"] == "otp.verified")["data"]["email"] == user
    assert all(e["timestamp"].endswith("Z") for e in events)

    def count(text: str, result: str, type_: str) -> float:
        found = re.search(rf'^otp_events_out_total{{result="{result}",type="{type_}"}} (\S+)$', text, re.M)
        return float(found[1]) if found else 0.0

    assert count(metrics, "delivered", "otp.sent") - count(before, "delivered", "otp.sent") == 2
    assert count(metrics, "queued", "otp.verified") - count(before, "queued", "otp.verified") == 1
    retried = events[0]["type"]
    assert count(metrics, "retry_scheduled", retried) - count(before, "retry_scheduled", retried) == 1


async def test_a_suppressed_address_gives_otp_suppressed(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], receiver: Receiver
) -> None:
    key = "events-admin-key-0123456789-0123456789-0"
    settings = make_settings(email_provider="console", admin_api_keys=[key], events_webhook_url=receiver.url,
                             events_webhook_secret=EVENTS_SECRET)  # fmt: skip
    async with open_app(settings) as app:
        email = unique_email()
        put = await app.http.put(f"/api/v1/admin/suppressions/{email}", json={"reason": "manual"},
                                 headers={"authorization": f"Bearer {key}"})  # fmt: skip
        assert put.status_code == 201
        assert (await app.http.post(SEND, json={"email": email})).status_code == 202
        await drain(app)
        [event] = await receiver.wait_for(1)
    assert (event["type"], event["data"]["email"], event["data"]["provider"]) == (
        "otp.suppressed",
        email,
        None,
    )


def test_a_forged_event_fails_verification(receiver: Receiver) -> None:
    """The receiver's check in the tests above is the real one: a wrong secret is refused."""
    body = b'{"type":"otp.sent"}'
    headers = {"webhook-id": "msg_1", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"}
    with pytest.raises(WebhookVerificationError):
        Webhook(EVENTS_SECRET).verify(body, headers)


def test_the_retry_schedule() -> None:
    at = 1_000_000
    times = []
    now = at
    while (due := next_attempt(at, now)) is not None:
        times.append((due - at) // 1000)
        now = due
    gaps = [b - a for a, b in itertools.pairwise([0, *times])]
    assert gaps[:6] == [5, 15, 60, 300, 1800, 3600]
    assert set(gaps[5:]) == {3600}
    assert 86400 - 3600 < times[-1] <= 86400
    assert next_attempt(at, at + 86_400_001) is None


@pytest.fixture
async def redis_client(key_prefix: str) -> AsyncIterator[PipelinedRedis]:
    client = open_redis(REDIS_URL, RedisKeys(key_prefix), timeout=2, cluster=False)
    yield client
    await client.aclose()


async def test_a_receiver_down_for_a_while_gets_every_event_once_it_is_back(
    redis_client: PipelinedRedis, key_prefix: str
) -> None:
    """The sender alone on a clock of its own: the receiver is down (nothing listens) for the
    first attempts; the clock passes 5 s, 15 s and 1 min; the receiver comes back; each event
    arrives once, with the webhook-id it had, signed at the time of its delivery (the fake clock
    starts 200 s back, so that 381 s later it is inside the receiver's ±5 min window)."""
    clock = FakeClock(time.time() - 200)
    keys = RedisKeys(key_prefix)
    seal = EventSeal(Sealer(b"s" * 32))
    outbox = EventOutbox(redis_client, keys, seal, clock=clock)
    port = free_port()
    receiver = Receiver()
    async with httpx.AsyncClient() as http:
        sender = EventSender(redis=redis_client, keys=keys, seal=seal, url=f"http://127.0.0.1:{port}/hooks/otp",
                             secret=EVENTS_SECRET, http=http, name="t", clock=clock, block_ms=100)  # fmt: skip
        running = asyncio.create_task(sender.run())
        try:
            for n in range(3):
                await outbox.publish(
                    "otp.sent", {"email": f"u{n}@example.org", "job_id": f"j{n}"}, event_id=f"j{n}"
                )
            async with asyncio.timeout(10):
                while (await sender.backlog())[1] < 3:  # first attempts failed: all three scheduled
                    await asyncio.sleep(0.05)
            assert await sender.backlog() == (0, 3)
            for step in (6, 15, 60):  # the retries 5 s, 15 s and 1 min apart, still down
                clock.advance(step)
                await asyncio.sleep(1.5)
            assert (await sender.backlog())[1] == 3
            await receiver.start(port)
            clock.advance(300)  # the retry 5 minutes later
            events = await receiver.wait_for(3)
        finally:
            sender.stop()
            await running
            await sender.aclose()
            await receiver.stop()
    assert sorted(e["webhook-id"] for e in events) == ["msg_j0", "msg_j1", "msg_j2"]
    assert all(int(h["webhook-timestamp"]) == int(clock.now) for _, h in receiver.requests)
    async with asyncio.timeout(5):
        while await sender.backlog() != (0, 0):
            await asyncio.sleep(0.05)


async def test_an_event_is_dropped_after_24_hours(redis_client: PipelinedRedis, key_prefix: str) -> None:
    clock = FakeClock(1_800_000_000.0)
    keys = RedisKeys(key_prefix)
    seal = EventSeal(Sealer(b"s" * 32))
    async with httpx.AsyncClient() as http:
        sender = EventSender(redis=redis_client, keys=keys, seal=seal, url=f"http://127.0.0.1:{free_port()}/x",
                             secret=EVENTS_SECRET, http=http, name="t", clock=clock, block_ms=100)  # fmt: skip
        running = asyncio.create_task(sender.run())
        try:
            await EventOutbox(redis_client, keys, seal, clock=clock).publish(
                "otp.verified", {"email": "a@b.example"}
            )
            async with asyncio.timeout(10):
                while (await sender.backlog())[1] < 1:
                    await asyncio.sleep(0.05)
            clock.advance(86_401)
            async with asyncio.timeout(10):
                while await sender.backlog() != (0, 0):
                    await asyncio.sleep(0.05)
        finally:
            sender.stop()
            await running
            await sender.aclose()

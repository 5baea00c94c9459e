"""GET /api/v1/auth/otp/sends/{send_id} (CONTRACT §3, issue 31) through the HTTP API, on Redis
and PostgreSQL and on the embedded default: each status reached through the real paths."""

import asyncio
import json
import statistics
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from redis.asyncio import Redis
from sqlalchemy import text

from otp_service.redisio import RedisKeys
from otp_service.settings import Settings
from tests.support import ProviderFake, drain, unique_email
from tests.test_delivery import moto_url, ses_client  # noqa: F401 - fixtures
from tests.test_reputation_sources import sns_event
from tests.test_resend_webhooks import SECRET, event, signed
from tests.test_sns_webhooks import CERT_PEM, CERT_URL, TOPIC, notification, sign

SEND = "/api/v1/auth/otp/send"
SENDS = "/api/v1/auth/otp/sends"
RESEND_EVENTS = "/api/v1/auth/resend-events/"
REVIEWER = "app-review@example.org"
STORES = [{}, {"redis_url": None}]
WIDE = {"otp_send": "1000/minute", "otp_send_subnet": "1000/minute"}


@pytest.fixture(params=STORES, ids=["redis", "embedded"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    chosen = dict(request.param)
    if chosen:  # the embedded store, with a database of its own
        chosen["database_url"] = f"sqlite+aiosqlite:///{tmp_path / 'otp.db'}"
    return chosen


@pytest.fixture
async def app(
    store: dict[str, Any], open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> AsyncIterator[Any]:
    """No worker: a send stays where send.lua put it."""
    settings = make_settings(
        test_recipients={REVIEWER: "123456"}, conversion_min_sends=1_000_000, throttle_rates=WIDE,
        worker_enabled=False, **store,
    )  # fmt: skip
    async with open_app(settings) as client:
        yield client


async def send(app: Any, email: str, headers: dict[str, str] | None = None) -> str:
    res = await app.http.post(SEND, json={"email": email}, headers=headers or {})
    assert res.status_code == 202, res.text
    send_id: str = res.json()["send_id"]
    return send_id


async def status_of(app: Any, send_id: str) -> str:
    res = await app.http.get(f"{SENDS}/{send_id}")
    assert res.status_code == 200, res.text
    body = res.json()
    assert set(body) == {"status", "updated_at"}
    assert datetime.fromisoformat(body["updated_at"]).utcoffset() is not None  # RFC 3339, a zone
    status: str = body["status"]
    return status


async def test_each_send_gets_a_fresh_id_that_reads_queued(app: Any) -> None:
    email = unique_email()
    first = await send(app, email)
    second = await send(app, unique_email())
    assert first != second
    assert len(first) == 22  # secrets.token_urlsafe(16): 128 bits
    assert await status_of(app, first) == "queued"


async def test_an_idempotent_replay_answers_the_same_send_id(app: Any) -> None:
    email = unique_email()
    key = {"Idempotency-Key": "tap-1"}
    first = await app.http.post(SEND, json={"email": email}, headers=key)
    again = await app.http.post(SEND, json={"email": email}, headers=key)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()


async def test_a_test_recipient_shows_delivered(app: Any) -> None:
    assert await status_of(app, await send(app, REVIEWER)) == "delivered"


async def test_an_unknown_id_is_not_found(app: Any) -> None:
    res = await app.http.get(f"{SENDS}/AAAAAAAAAAAAAAAAAAAAAA")
    assert (res.status_code, res.json()["code"]) == (404, "not_found")
    res = await app.http.get(f"{SENDS}/{'x' * 300}")
    assert (res.status_code, res.json()["code"]) == (404, "not_found")


async def test_the_status_is_kept_for_the_code_lifetime_plus_an_hour(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], redis: Redis, key_prefix: str
) -> None:
    async with open_app(make_settings(worker_enabled=False)) as app:
        send_id = await send(app, unique_email())
    ttl = await redis.pttl(RedisKeys(key_prefix).send(send_id))
    assert 300_000 + 3_600_000 - 5_000 < ttl <= 300_000 + 3_600_000


async def test_the_otp_status_rate_applies(
    store: dict[str, Any], open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    rates = {**WIDE, "otp_status": "2/minute"}
    async with open_app(make_settings(throttle_rates=rates, worker_enabled=False, **store)) as app:
        send_id = await send(app, unique_email())
        assert await status_of(app, send_id) == "queued"
        await status_of(app, send_id)
        res = await app.http.get(f"{SENDS}/{send_id}")
        assert (res.status_code, res.json()["code"]) == (429, "rate_limited")
        assert int(res.headers["retry-after"]) >= 1


def resend_settings(make_settings: Callable[..., Settings], store: dict[str, Any], **more: Any) -> Settings:
    return make_settings(
        **{"email_provider": "resend", "resend_api_key": "re_test", "resend_api_url": "https://api.resend.test",
           "conversion_min_sends": 1_000_000, "throttle_rates": WIDE, **store, **more},
    )  # fmt: skip


async def suppress(app: Any, email: str, reason: str) -> None:
    async with app.db.begin() as conn:
        await conn.execute(
            text("INSERT INTO suppressions (email, reason, source) VALUES (:e, :r, 'test')"),
            {"e": email, "r": reason},
        )


async def test_the_worker_moves_each_status(
    store: dict[str, Any], open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """A provider that accepts: sent; one that refuses the message: failed (the worker gives up);
    a bounce-suppressed address: undeliverable; a complaint- or operator-suppressed one: sent,
    as an address the provider reports nothing about."""
    ok, refused, bounced, complained, blocked = (unique_email() for _ in range(5))
    with respx.mock(assert_all_called=False, using="httpx") as mock:
        mock.route(host="otp.test").pass_through()

        def provider(request: httpx.Request) -> httpx.Response:
            if refused.encode() in request.content:
                return httpx.Response(422, json={"name": "validation_error", "message": "no"})
            return httpx.Response(200, json={"id": "re-1"})

        mock.post("https://api.resend.test/emails").mock(side_effect=provider)
        async with open_app(resend_settings(make_settings, store)) as app:
            await suppress(app, bounced, "bounce")
            await suppress(app, complained, "complaint")
            await suppress(app, blocked, "manual")
            ids = {email: await send(app, email) for email in (ok, refused, bounced, complained, blocked)}
            await drain(app)
            got = {email: await status_of(app, send_id) for email, send_id in ids.items()}
    assert got == {
        ok: "sent",
        refused: "failed",
        bounced: "undeliverable",
        complained: "sent",
        blocked: "sent",
    }


async def test_a_newer_send_supersedes_one_whose_first_attempt_failed(
    store: dict[str, Any], open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """The provider answers 503; the address sends again; the provider recovers: the first send's
    retry finds its code replaced."""
    email = unique_email()
    async with ProviderFake(failing=True) as provider:
        settings = resend_settings(make_settings, store, resend_api_url=provider.url, rate_limit_ttl=0)
        async with open_app(settings) as app:
            first = await send(app, email)
            await asyncio.wait_for(provider.failed.wait(), 5)
            second = await send(app, email)
            provider.recover()
            await drain(app, timeout=15)
            assert (await status_of(app, first), await status_of(app, second)) == ("superseded", "sent")


async def test_a_newer_send_supersedes_an_earlier_one_already_sent_or_delivered(
    store: dict[str, Any], open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """CONTRACT §3: superseded when a newer send replaced this code, whatever became of its email
    (the provider took it; the provider reported it delivered). A send whose code was used is not
    superseded by a later one: nothing replaced its code."""
    sent, delivered, used = (unique_email() for _ in range(3))
    async with ProviderFake() as provider:
        settings = resend_settings(
            make_settings, store, resend_api_url=provider.url, resend_webhook_secret=SECRET, rate_limit_ttl=0
        )
        async with open_app(settings) as app:
            first = {email: await send(app, email) for email in (sent, delivered, used)}
            await drain(app)
            assert {await status_of(app, i) for i in first.values()} == {"sent"}
            payload = event("email.delivered", delivered)
            payload["data"]["email_id"] = provider.sent_to(delivered)[0].message_id
            body, headers = signed(payload)
            assert (await app.http.post(RESEND_EVENTS, content=body, headers=headers)).status_code < 300
            assert await status_of(app, first[delivered]) == "delivered"
            code = provider.sent_to(used)[0].code
            verified = await app.http.post("/api/v1/auth/otp/verify", json={"email": used, "code": code})
            assert verified.status_code == 200, verified.text
            newer = {email: await send(app, email) for email in (sent, delivered, used)}
            got = {email: await status_of(app, send_id) for email, send_id in first.items()}
            assert got == {sent: "superseded", delivered: "superseded", used: "sent"}
            await drain(app)
            assert {await status_of(app, i) for i in newer.values()} == {"sent"}


async def test_a_provider_that_keeps_failing_until_the_worker_gives_up_shows_failed(
    store: dict[str, Any], open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """Resend answers 503 to every attempt (retryable, no Retry-After): the send reads queued while
    the worker retries with backoff, and failed once it gives up, when the next attempt would
    come after the code expired. OTP_CODE_TTL=30, the shortest the settings allow, is the retry
    window: the worker gives up within 30 s."""
    email = unique_email()
    async with ProviderFake(failing=True) as provider:
        settings = resend_settings(make_settings, store, resend_api_url=provider.url, code_ttl=30)
        async with open_app(settings) as app:
            send_id = await send(app, email)
            await asyncio.wait_for(provider.failed.wait(), 5)
            assert await status_of(app, send_id) == "queued"
            await drain(app, timeout=40)
            assert await status_of(app, send_id) == "failed"
    assert len(provider.calls) >= 2  # retried
    assert {c.status for c in provider.calls} == {503}


async def watch(app: Any, send_id: str, accepted_at: float) -> tuple[list[str], float, str]:
    """Poll a send every 20 ms, as a client's screen might, until it leaves `queued` (5 s at
    most): the statuses seen in order, the seconds from its 202 to the first other one, and that
    answer's updated_at."""
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    async with asyncio.timeout(5):
        while True:
            res = await app.http.get(f"{SENDS}/{send_id}")
            assert res.status_code == 200, res.text
            body = res.json()
            if not seen or seen[-1] != body["status"]:
                seen.append(body["status"])
            if body["status"] != "queued":
                return seen, loop.time() - accepted_at, body["updated_at"]
            await asyncio.sleep(0.02)


async def test_no_enumeration_a_complaint_suppressed_address_reads_the_same_statuses_at_the_same_times(
    store: dict[str, Any], open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """A provider that reports no delivery and takes 0.4 to 0.6 s to answer, as a real API takes
    a fraction of a second: an unsuppressed and a complaint-suppressed address, polled through
    the HTTP API, both read queued, then sent, after times of the same spread (the suppressed
    send waits as long as one of the worker's recent sends took), and updated_at in whole
    seconds. No email leaves for the suppressed address."""
    loop = asyncio.get_running_loop()
    rates = {**WIDE, "otp_status": "100000/minute"}
    took: dict[str, list[float]] = {"plain": [], "complained": []}
    async with ProviderFake(latency=(0.4, 0.6)) as provider:
        settings = resend_settings(make_settings, store, resend_api_url=provider.url, throttle_rates=rates)
        async with open_app(settings) as app:
            for _ in range(3):  # the worker's recent sends
                await send(app, unique_email())
            await drain(app)
            for _ in range(4):
                plain, complained = unique_email(), unique_email()
                await suppress(app, complained, "complaint")
                watching = []
                for kind, email in (("plain", plain), ("complained", complained)):
                    send_id = await send(app, email)
                    watching.append((kind, asyncio.create_task(watch(app, send_id, loop.time()))))
                for kind, task in watching:
                    seen, after, updated_at = await task
                    assert seen == ["queued", "sent"], (kind, seen)
                    assert datetime.fromisoformat(updated_at).microsecond == 0, updated_at
                    took[kind].append(after)
                assert provider.sent_to(complained) == []
    assert min(took["complained"]) >= 0.35, took  # a provider call's time, not at once
    assert abs(statistics.mean(took["complained"]) - statistics.mean(took["plain"])) < 0.25, took


async def test_signed_provider_events_move_the_status(
    store: dict[str, Any], open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """Resend took each email under its own id; then a signed delivered event, a delayed one and
    a hard bounce arrive: delivered, delayed (then delivered: never back), undeliverable."""
    delivered, delayed, bounced = (unique_email() for _ in range(3))
    message_of = {delivered: "re-delivered", delayed: "re-delayed", bounced: "re-bounced"}

    def provider(request: httpx.Request) -> httpx.Response:
        to = json.loads(request.content)["to"]
        address = to[0] if isinstance(to, list) else to
        return httpx.Response(200, json={"id": f"{message_of[address]}-{id(store)}"})

    def resend_event(kind: str, email: str) -> tuple[bytes, dict[str, str]]:
        payload = event(kind, email)
        payload["data"]["email_id"] = f"{message_of[email]}-{id(store)}"
        return signed(payload)

    with respx.mock(assert_all_called=False, using="httpx") as mock:
        mock.route(host="otp.test").pass_through()
        mock.post("https://api.resend.test/emails").mock(side_effect=provider)
        settings = resend_settings(make_settings, store, resend_webhook_secret=SECRET, rate_limit_ttl=0)
        async with open_app(settings) as app:
            ids = {email: await send(app, email) for email in message_of}
            await drain(app)
            assert {await status_of(app, i) for i in ids.values()} == {"sent"}
            for kind, email in [
                ("email.delivered", delivered),
                ("email.delivery_delayed", delayed),
                ("email.bounced", bounced),
            ]:
                body, headers = resend_event(kind, email)
                res = await app.http.post(RESEND_EVENTS, content=body, headers=headers)
                assert res.status_code < 300, res.text
            got = {email: await status_of(app, send_id) for email, send_id in ids.items()}
            assert got == {delivered: "delivered", delayed: "delayed", bounced: "undeliverable"}
            body, headers = resend_event("email.delivered", delayed)
            assert (await app.http.post(RESEND_EVENTS, content=body, headers=headers)).status_code < 300
            body, headers = resend_event("email.delivery_delayed", delivered)
            assert (await app.http.post(RESEND_EVENTS, content=body, headers=headers)).status_code < 300
            assert (await status_of(app, ids[delayed]), await status_of(app, ids[delivered])) == (
                "delivered",
                "delivered",
            )
            # A later send to the address the bounce suppressed: undeliverable, as the bounce was.
            resent = await send(app, bounced)
            await drain(app)
            assert await status_of(app, resent) == "undeliverable"


async def test_ses_delivery_delay_over_sns_becomes_delayed(
    store: dict[str, Any], open_app: Callable[..., Any], make_settings: Callable[..., Settings],
    moto_url: str, ses_client: Any,  # noqa: F811
) -> None:  # fmt: skip
    """SES (a real moto server) takes the email; a genuinely signed DeliveryDelay, then a
    Delivery, arrive over SNS."""
    settings = make_settings(
        email_provider="ses", ses_endpoint_url=moto_url, sns_topic_arns=[TOPIC], conversion_min_sends=1_000_000,
        throttle_rates=WIDE, **store,
    )  # fmt: skip
    email = unique_email()
    with respx.mock(assert_all_called=False, using="httpx") as mock:
        mock.route(host="otp.test").pass_through()
        mock.get(CERT_URL).mock(return_value=httpx.Response(200, content=CERT_PEM))
        async with open_app(settings) as app:
            send_id = await send(app, email)
            await drain(app)
            assert await status_of(app, send_id) == "sent"
            async with app.db.connect() as conn:
                query = text("SELECT provider_message_id FROM deliveries WHERE email = :e")
                message_id = await conn.scalar(query, {"e": email})
            events: list[tuple[str, dict[str, Any], str]] = [
                ("DeliveryDelay", {"delayType": "MailboxFull", "delayedRecipients": [{"emailAddress": email}]},
                 "delayed"),
                ("Delivery", {"recipients": [email]}, "delivered"),
            ]  # fmt: skip
            for kind, body, expected in events:
                res = await app.http.post(
                    "/api/v1/auth/ses-events/",
                    content=json.dumps(sign(notification(sns_event(kind, message_id, email, **body)))).encode(),
                    headers={"content-type": "text/plain", "x-amz-sns-message-type": "Notification"},
                )  # fmt: skip
                assert res.status_code == 200, res.text
                assert await status_of(app, send_id) == expected

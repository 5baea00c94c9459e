"""The reputation guard, driven by synthetic delivery and webhook records."""

import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from otp_service.delivery.providers.console import ConsoleProvider
from otp_service.delivery.providers.resend import ResendProvider
from otp_service.delivery.sender import Deliverer
from otp_service.settings import Settings
from tests.support import embedded_send_rate, unique_email

KEY = "admin-key-0123456789-0123456789-01"
AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.fixture
async def app(open_app: Callable[..., Any], make_settings: Callable[..., Settings]) -> AsyncIterator[Any]:
    # A provider name of this test's own, so rows left by other tests never count.
    settings = make_settings(admin_api_keys=[KEY], conversion_min_sends=1_000_000, throttle_rates={"otp_send": "100/minute", "otp_verify": "100/minute", "otp_send_subnet": "100/minute", "otp_verify_subnet": "100/minute"},
                             reputation_min_volume=200, worker_enabled=False)  # fmt: skip
    async with open_app(settings) as client:
        client.provider = f"console-{secrets.token_hex(3)}"
        client.web.reputation.providers = [client.provider]
        yield client


async def synthetic(
    app: Any, *, sent: int, bounces: int = 0, complaints: int = 0, unmatched: int = 0
) -> None:
    """`sent` deliveries, each to a mailbox and from a /24 of its own; the first `bounces` of them
    bounced, the next `complaints` complained (events matched by message id); and `unmatched`
    bounces that name no delivery of ours."""
    provider, tag = app.provider, secrets.token_hex(4)
    async with app.db.begin() as conn:
        for i in range(sent):
            await conn.execute(
                text("INSERT INTO deliveries (job_id, email, outcome, provider, provider_message_id, source_client, "
                     "source_subnet) VALUES (:j, :e, 'sent', :p, :m, :c, :s)"),
                {"j": f"{provider}-{tag}-{i}", "e": f"u{i}-{tag}@example.org", "p": provider, "m": f"{tag}-{i}",
                 "c": f"10.{i // 250}.{i % 250}.1", "s": f"10.{i // 250}.{i % 250}.0/24"},
            )  # fmt: skip
        kinds = ["bounce"] * bounces + ["complaint"] * complaints
        for i, kind in enumerate(kinds + ["bounce"] * unmatched):
            await conn.execute(
                text("INSERT INTO webhook_events (provider, event_id, event_type, outcome, payload, message_id) "
                     "VALUES (:p, :i, :t, 'suppressed', '{}', :m)"),
                {"p": provider, "i": secrets.token_hex(8), "t": kind,
                 "m": f"{tag}-{i}" if i < len(kinds) else f"elsewhere-{tag}-{i}"},
            )  # fmt: skip


async def test_bounce_rate_over_threshold_pauses_and_sends_answer_503(app: Any) -> None:
    await synthetic(app, sent=250, bounces=15)  # 6% > 4%
    [health] = await app.web.reputation.check()
    assert health.paused
    assert "bounce rate 6.00%" in (health.reason or "")
    res = await app.http.post("/api/v1/auth/otp/send", json={"email": unique_email()})
    assert (res.status_code, res.json()["code"]) == (503, "sending_paused")
    assert int(res.headers["retry-after"]) >= 1
    view = (await app.http.get("/api/v1/admin/reputation", headers=AUTH)).json()
    assert view[0]["paused"] is True
    assert view[0]["bounces"] == 15

    resumed = await app.http.post(f"/api/v1/admin/reputation/{app.provider}/resume", headers=AUTH)
    assert resumed.status_code == 200
    assert resumed.json()[0]["paused"] is False
    assert (await app.http.post("/api/v1/auth/otp/send", json={"email": unique_email()})).status_code == 202
    # Rates count from the resume on: the old bounces do not pause it again.
    [health] = await app.web.reputation.check()
    assert not health.paused


async def test_complaint_rate_over_threshold_pauses(app: Any) -> None:
    await synthetic(app, sent=300, complaints=5)  # 1.7% > 0.08%, from 5 mailboxes in 5 subnets
    [health] = await app.web.reputation.check()
    assert health.paused
    assert "complaint rate" in (health.reason or "")


async def test_one_complaint_is_not_evidence_enough(app: Any) -> None:
    """The attack: a code to one's own mailbox and "Report spam" would cross 0.08% at 300 sends."""
    await synthetic(app, sent=300, complaints=1)  # 0.33%, but one mailbox
    [health] = await app.web.reputation.check()
    assert not health.paused
    assert (await app.http.post("/api/v1/auth/otp/send", json={"email": unique_email()})).status_code == 202


async def test_below_minimum_volume_nothing_pauses(app: Any) -> None:
    await synthetic(app, sent=50, bounces=20)
    [health] = await app.web.reputation.check()
    assert not health.paused
    assert (await app.http.post("/api/v1/auth/otp/send", json={"email": unique_email()})).status_code == 202


async def test_rates_under_threshold_do_not_pause(app: Any) -> None:
    await synthetic(app, sent=1000, bounces=30)  # 3%
    [health] = await app.web.reputation.check()
    assert not health.paused
    assert health.bounce_rate == pytest.approx(0.03)


async def test_resume_of_an_unknown_provider_is_404(app: Any) -> None:
    res = await app.http.post("/api/v1/admin/reputation/nope/resume", headers=AUTH)
    assert (res.status_code, res.json()["code"]) == (404, "not_found")


async def test_paused_primary_fails_over_to_the_healthy_fallback() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, json={"id": "re-1"})

    resend = ResendProvider(httpx.AsyncClient(transport=httpx.MockTransport(handler)), api_url="https://r.test",
                            api_key="k", timeout=5)  # fmt: skip
    import io

    out = io.StringIO()
    deliverer = Deliverer(
        settings=Settings(),
        primary=resend,
        fallback=ConsoleProvider(out),
        send_rate=embedded_send_rate(100),
        healthy=lambda name: name != "resend",
    )
    sent = await deliverer.send_template("email_otp", "a@example.org", "123456", idempotency_key="k",
                                         deadline=time.time() + 10)  # fmt: skip
    assert sent.provider == "console"
    assert calls == []
    assert "Your verification code is: 123456" in out.getvalue()


async def test_an_admin_resume_reaches_the_worker_in_the_same_process(
    make_settings: Callable[..., Settings],
) -> None:
    from otp_service.assembly import build_web, open_infrastructure, running_worker

    settings = make_settings(worker_enabled=True)
    async with open_infrastructure(settings) as infra, running_worker(infra) as built:
        web = build_web(infra)
        await infra.stores.pauses.pause("console", "complaint rate 1% over 0.08%", int(time.time() * 1000))
        await built.guard.check()
        assert not built.guard.healthy("console")  # the worker skips it
        await web.reputation.resume("console")  # what POST /api/v1/admin/reputation/console/resume does
        assert built.guard.healthy("console")  # at once, not at the worker's next check


async def test_the_guard_audits_its_pause_and_resumes_after_the_cooloff(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(admin_api_keys=[KEY], reputation_cooloff=1, worker_enabled=False)
    async with open_app(settings) as app:
        app.provider = f"console-{secrets.token_hex(3)}"
        app.web.reputation.providers = [app.provider]
        await synthetic(app, sent=250, bounces=15)  # 6%, 15 mailboxes
        [health] = await app.web.reputation.check()
        assert health.paused
        [health] = await app.web.reputation.check()
        assert health.paused  # within the cool-off: no resume, and the evidence still holds
        async with app.db.begin() as conn:  # the bounces leave the window
            await conn.execute(text("DELETE FROM webhook_events WHERE provider = :p"), {"p": app.provider})
        time.sleep(1.1)  # past the one-second cool-off
        [health] = await app.web.reputation.check()
        assert not health.paused  # resumed by the guard: the thresholds hold
        audit = (await app.http.get("/api/v1/admin/audit", headers=AUTH)).json()["items"]
        mine = [(e["action"], e["key_fingerprint"]) for e in audit if e["target"] == app.provider]
        assert mine == [("reputation.resume", "reputation-guard"), ("reputation.pause", "reputation-guard")]


async def test_events_that_match_no_delivery_count_nowhere(app: Any) -> None:
    """A bounce or complaint whose message id names no delivery of ours is not evidence: anyone
    can have a provider report anything about mail we never sent."""
    await synthetic(app, sent=250, unmatched=40)  # 16% if they counted
    [health] = await app.web.reputation.check()
    assert not health.paused
    assert (health.bounces, health.evidence.bounced_mailboxes) == (0, 0)


async def test_bounces_from_fewer_subnets_than_the_minimum_do_not_pause(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(worker_enabled=False, reputation_min_sources=20)
    async with open_app(settings) as app:
        app.provider = f"console-{secrets.token_hex(3)}"
        app.web.reputation.providers = [app.provider]
        await synthetic(app, sent=250, bounces=15)  # 6%, 15 mailboxes, but 15 subnets < 20
        [health] = await app.web.reputation.check()
        assert not health.paused
        assert health.evidence.bounced_subnets == 15

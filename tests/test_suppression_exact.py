"""Suppression is exact (CONTRACT §6): a bounce, a complaint or an operator entry suppresses the
exact address it names, and the admin endpoints take that address. A complaint-suppressed
address still receives the codes its remembered sources request; a bounce-suppressed or
operator-suppressed one receives nothing. Events are Svix-signed Resend webhooks; the worker
runs on real PostgreSQL and Redis (and the embedded store where the API drives it)."""

import io
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import text

from otp_service.assembly import open_infrastructure
from otp_service.delivery.jobs import JobContent, JobSealer
from otp_service.delivery.queue import Job
from otp_service.delivery.repository import DeliveryOutcome
from otp_service.sealing import Sealer
from otp_service.settings import Settings
from tests.support import console_emails, drain
from tests.test_remembered_sources import WIDE
from tests.test_resend_webhooks import SECRET, event, signed
from tests.test_worker import console_deliverer, one_job_worker

SEND = "/api/v1/auth/otp/send"
VERIFY = "/api/v1/auth/otp/verify"
EVENTS = "/api/v1/auth/resend-events/"
ADMIN_KEY = "exact-admin-key-0123456789-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
PROXY, HOME, ELSEWHERE = "203.0.113.7", "198.51.100.23", "192.0.2.9"


@pytest.fixture(params=["redis", "embedded"])
async def app(
    request: pytest.FixtureRequest, open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> AsyncIterator[Any]:
    store = {} if request.param == "redis" else {"redis_url": None}
    settings = make_settings(
        resend_webhook_secret=SECRET, admin_api_keys=[ADMIN_KEY], trusted_proxies=[f"{PROXY}/32"],
        throttle_rates=WIDE, conversion_min_sends=1_000_000, rate_limit_ttl=0, **store,
    )  # fmt: skip
    async with open_app(settings) as client:
        yield client


async def provider_says(app: Any, kind: str, email: str) -> None:
    body, headers = signed(event(kind, email))
    assert (await app.http.post(EVENTS, content=body, headers=headers)).status_code == 200


async def emailed(app: Any, email: str, ip: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Ask for a code for `email` from `ip`: the addresses the emails that left went to."""
    capsys.readouterr()
    res = await app.http.post(SEND, json={"email": email}, headers={"x-forwarded-for": ip})
    assert res.status_code == 202  # the same answer, suppressed or not
    await drain(app)
    return [e.to for e in console_emails(capsys.readouterr().out)]


async def test_a_bounce_for_a_tagged_address_leaves_the_plain_address_deliverable(
    app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = f"victim{secrets.token_hex(4)}"
    tagged, plain = f"{victim}+zz@yahoo.com", f"{victim}@yahoo.com"
    await provider_says(app, "email.bounced", tagged)
    assert await emailed(app, plain, HOME, capsys) == [plain]
    assert await emailed(app, tagged, HOME, capsys) == []
    # Support finds the record under the address the bounce named, and only there.
    found = await app.http.get(f"/api/v1/admin/suppressions/{tagged}", headers=ADMIN)
    assert (found.status_code, found.json()["email"], found.json()["reason"]) == (200, tagged, "bounce")
    missing = await app.http.get(f"/api/v1/admin/suppressions/{plain}", headers=ADMIN)
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert (await app.http.delete(f"/api/v1/admin/suppressions/{plain}", headers=ADMIN)).status_code == 404
    assert (await app.http.delete(f"/api/v1/admin/suppressions/{tagged}", headers=ADMIN)).status_code == 204
    assert await emailed(app, tagged, HOME, capsys) == [tagged]


async def test_an_operator_entry_suppresses_its_own_address_only(
    app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    user = f"op{secrets.token_hex(4)}"
    put = await app.http.put(f"/api/v1/admin/suppressions/{user}@gmail.com", json={}, headers=ADMIN)
    assert put.status_code == 201
    assert await emailed(app, f"{user}@gmail.com", HOME, capsys) == []
    variant = f"{user[:2]}.{user[2:]}+x@googlemail.com"
    assert await emailed(app, variant, HOME, capsys) == [variant]


async def test_a_complaint_spares_the_addresss_remembered_sources_only(
    app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    email = f"user{secrets.token_hex(4)}@example.org"
    capsys.readouterr()
    assert (
        await app.http.post(SEND, json={"email": email}, headers={"x-forwarded-for": HOME})
    ).status_code == 202
    await drain(app)
    [sent] = console_emails(capsys.readouterr().out)
    body = {"email": email, "code": sent.code}
    verified = await app.http.post(VERIFY, json=body, headers={"x-forwarded-for": HOME})
    assert verified.status_code == 200  # HOME is a remembered source now
    await provider_says(app, "email.complained", email)
    assert await emailed(app, email, HOME, capsys) == [email]
    assert await emailed(app, email, ELSEWHERE, capsys) == []
    await provider_says(app, "email.bounced", email)  # a bounce too: nothing reaches it any more
    assert await emailed(app, email, HOME, capsys) == []


@pytest.mark.parametrize(
    ("rows", "remembered", "sent"),
    [
        ([("complaint", 0, 1)], True, True),
        ([("complaint", 0, 1)], False, False),
        ([("bounce", 1, 0)], True, False),
        ([("complaint", 1, 1)], True, False),  # a bounce after the complaint
        ([("manual", 0, 0)], True, False),
        ([], False, True),
    ],
    ids=["complaint-remembered", "complaint-stranger", "bounce-remembered", "complaint-then-bounce",
         "operator-remembered", "not-suppressed"],
)  # fmt: skip
async def test_the_workers_suppression_check_reads_the_jobs_remembered_flag(
    make_settings: Callable[..., Settings], rows: list[tuple[str, int, int]], remembered: bool, sent: bool
) -> None:
    settings = make_settings()
    sealer = JobSealer(Sealer(settings.secret))
    email = f"flag{secrets.token_hex(4)}@example.org"
    out = io.StringIO()

    async with open_infrastructure(settings) as infra:
        async with infra.engine.begin() as conn:
            for reason, bounces, complaints in rows:
                await conn.execute(
                    text("INSERT INTO suppressions (email, reason, source, bounce_count, complaint_count) "
                         "VALUES (:e, :r, 'resend', :b, :c)"),
                    {"e": email, "r": reason, "b": bounces, "c": complaints},
                )  # fmt: skip
        worker = one_job_worker(infra, console_deliverer(settings, out))
        content = JobContent(email=email, code="123456", code_hash="h" * 64, address_id="a", locale="en")
        job = Job("1-0", sealer.seal(content), int((time.time() + 60) * 1000), remembered=remembered)
        try:
            outcome = await worker.process(job)
        finally:
            await worker.aclose()
    assert outcome.status is (DeliveryOutcome.SENT if sent else DeliveryOutcome.SUPPRESSED)
    assert ("123456" in out.getvalue()) is sent

"""Time to inbox in /metrics (issue 31): accepted to sent and sent to delivered by provider, sent
to verified; each observed once per email, from the times the service itself recorded."""

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import insert

from otp_service.db.models import Delivery
from otp_service.settings import Settings
from tests.support import console_emails, drain, unique_email
from tests.test_resend_webhooks import SECRET, URL, event, signed


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def app(open_app: Callable[..., Any], make_settings: Callable[..., Settings]) -> AsyncIterator[Any]:
    async with open_app(
        make_settings(resend_webhook_secret=SECRET, conversion_min_sends=1_000_000)
    ) as client:
        yield client


async def test_a_sent_and_verified_code_observes_accepted_to_sent_and_sent_to_verified(
    app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    sent_before = sample("otp_accepted_to_sent_seconds_count", provider="console")
    verified_before = sample("otp_sent_to_verified_seconds_count")
    email = unique_email()
    assert (await app.http.post("/api/v1/auth/otp/send", json={"email": email})).status_code == 202
    await drain(app)
    assert sample("otp_accepted_to_sent_seconds_count", provider="console") == sent_before + 1
    [sent] = console_emails(capsys.readouterr().out)
    res = await app.http.post("/api/v1/auth/otp/verify", json={"email": email, "code": sent.code})
    assert res.status_code == 200
    async with asyncio.timeout(5):  # observed in the background, off the verify's path
        while sample("otp_sent_to_verified_seconds_count") == verified_before:
            await asyncio.sleep(0.01)
    assert sample("otp_sent_to_verified_seconds_count") == verified_before + 1


async def test_a_delivered_event_observes_sent_to_delivered_once_for_its_provider(app: Any) -> None:
    email = unique_email()
    payload = event("email.delivered", email)
    message_id = payload["data"]["email_id"]
    sent_at = datetime.now(UTC) - timedelta(seconds=7)
    async with app.db.begin() as conn:
        await conn.execute(insert(Delivery).values(
            job_id=f"{int(sent_at.timestamp() * 1000)}-0", email=email, outcome="sent", provider="resend",
            provider_message_id=message_id, created_at=sent_at,
        ))  # fmt: skip
    count = sample("otp_sent_to_delivered_seconds_count", provider="resend")
    total = sample("otp_sent_to_delivered_seconds_sum", provider="resend")
    body, headers = signed(payload)
    for _ in range(2):  # the provider delivering its event twice: processed, and counted, once
        assert (await app.http.post(URL, content=body, headers=headers)).status_code == 200
    assert sample("otp_sent_to_delivered_seconds_count", provider="resend") == count + 1
    assert 6 <= sample("otp_sent_to_delivered_seconds_sum", provider="resend") - total <= 60


async def test_an_event_for_no_delivery_of_ours_observes_nothing(app: Any) -> None:
    count = sample("otp_sent_to_delivered_seconds_count", provider="resend")
    body, headers = signed(event("email.delivered", unique_email()))
    assert (await app.http.post(URL, content=body, headers=headers)).status_code == 200
    assert sample("otp_sent_to_delivered_seconds_count", provider="resend") == count

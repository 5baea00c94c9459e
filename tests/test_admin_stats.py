"""GET /api/v1/admin/stats (CONTRACT §3), from the deliveries table: the same SQL on PostgreSQL and
SQLite, counts and time-to-inbox percentiles by provider and by recipient domain."""

import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from otp_service.db.engine import create_engine, create_sessionmaker
from otp_service.db.migrate import upgrade_engine
from otp_service.db.models import Delivery, WebhookEvent
from otp_service.delivery import repository
from otp_service.delivery.stats import OTHER, TOP_DOMAINS, DeliveryStats, quantile
from otp_service.settings import Settings
from tests.test_admin import AUTH, KEY


def test_a_quantile_is_interpolated_within_its_bucket() -> None:
    # STAGE_BOUNDS (0.5, 1, 2, 5, ...): 10 under 1 s, 10 more under 2 s, then the total 20.
    cumulative = [0, 10, 20, *([20] * 9), 20]
    assert quantile(0.5, cumulative) == pytest.approx(1.0)
    assert quantile(0.95, cumulative) == pytest.approx(1.9)
    assert quantile(0.5, [0] * 13) is None
    assert quantile(0.5, [*([0] * 12), 4]) == 3600.0  # all past the last bound: that bound


async def seed(engine: Any, provider: str, domain: str, now: datetime) -> None:
    """10 emails through `provider` to `domain` in the last hour: accepted 3 s before sent, 6
    delivered 4 s after, 3 verified 20 s after; one failed; one sent 2 days ago; 2 bounces and
    one complaint matched to them."""
    rows, tag = [], secrets.token_hex(4)  # message ids unique to this seed
    for n in range(10):
        sent = now - timedelta(minutes=n + 1)
        rows.append({
            "job_id": f"{secrets.token_hex(6)}-0", "email": f"u{n}@{domain}", "outcome": "sent",
            "provider": provider, "provider_message_id": f"{tag}-{n}", "created_at": sent,
            "queued_at": sent - timedelta(seconds=3),
            "delivered_at": sent + timedelta(seconds=4) if n < 6 else None,
            "verified_at": sent + timedelta(seconds=20) if n < 3 else None,
        })  # fmt: skip
    rows.append({"job_id": f"{secrets.token_hex(6)}-0", "email": f"x@{domain}", "outcome": "failed",
                 "provider": provider, "provider_message_id": None, "created_at": now - timedelta(minutes=3),
                 "queued_at": now - timedelta(minutes=4), "delivered_at": None, "verified_at": None})  # fmt: skip
    rows.append({"job_id": f"{secrets.token_hex(6)}-0", "email": f"old@{domain}", "outcome": "sent",
                 "provider": provider, "provider_message_id": f"{tag}-old",
                 "created_at": now - timedelta(days=2), "queued_at": now - timedelta(days=2),
                 "delivered_at": None, "verified_at": None})  # fmt: skip
    events = [
        {"provider": provider, "event_id": f"{tag}-e{n}", "event_type": kind, "outcome": "suppressed",
         "payload": {}, "message_id": f"{tag}-{n}", "received_at": now - timedelta(seconds=30)}
        for n, kind in ((7, "email.bounced"), (8, "email.bounced"), (9, "email.complained"))
    ]  # fmt: skip
    async with engine.begin() as conn:
        await conn.execute(insert(Delivery), rows)
        await conn.execute(insert(WebhookEvent), events)


@pytest.fixture(params=["postgresql", "sqlite"])
async def engine(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    url = database_url if request.param == "postgresql" else f"sqlite+aiosqlite:///{tmp_path / 'otp.db'}"
    engine = create_engine(url)
    if request.param == "sqlite":
        await upgrade_engine(engine)
    yield engine
    await engine.dispose()


async def test_the_window_is_counted_by_provider_and_domain_with_its_percentiles(engine: Any) -> None:
    now = datetime.now(UTC)
    provider, domain = "resend", f"{secrets.token_hex(4)}.example"
    await seed(engine, provider, domain, now)
    stats = await DeliveryStats(sessions=create_sessionmaker(engine)).stats(hours=1)
    mine = stats.by_domain.get(domain) or stats.by_domain[OTHER]
    if domain in stats.by_domain:
        assert (mine.accepted, mine.sent, mine.delivered, mine.verified) == (11, 10, 6, 3)
        assert (mine.bounced, mine.complained) == (2, 1)
        assert mine.conversion == pytest.approx(0.3)
        # 3 s lies in the 2-5 s bucket, 4 s too, 20 s in 10-30 s.
        assert all(2 <= p <= 5 for p in mine.percentiles("accepted_to_sent") if p is not None)
        assert all(2 <= p <= 5 for p in mine.percentiles("sent_to_delivered") if p is not None)
        assert all(10 <= p <= 30 for p in mine.percentiles("sent_to_verified") if p is not None)
    assert len(stats.by_domain) <= TOP_DOMAINS + 1
    total = stats.total
    assert total.accepted == sum(t.accepted for t in stats.by_provider.values())
    assert total.accepted == sum(t.accepted for t in stats.by_domain.values())
    assert total.buckets == {s: [sum(c) for c in zip(*(t.buckets[s] for t in stats.by_domain.values()), strict=True)]
                             for s in repository.STAGES}  # fmt: skip


async def test_the_route_answers_the_window_in_the_response_model(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(admin_api_keys=[KEY], worker_enabled=False)
    async with open_app(settings) as app:
        await seed(app.db, "resend", f"{secrets.token_hex(4)}.example", datetime.now(UTC))
        res = await app.http.get("/api/v1/admin/stats", params={"hours": 2}, headers=AUTH)
        assert res.status_code == 200, res.text
        body = res.json()
        assert body["hours"] == 2
        assert body["total"]["sent"] >= 10
        assert body["by_provider"]["resend"]["verified"] >= 3
        assert set(body["total"]["accepted_to_sent"]) == {"p50", "p95"}
        assert (
            await app.http.get("/api/v1/admin/stats", params={"hours": 0}, headers=AUTH)
        ).status_code == 422
        assert (await app.http.get("/api/v1/admin/stats")).status_code == 401

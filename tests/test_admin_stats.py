"""GET /api/v1/admin/stats (CONTRACT §3): the hourly roll-up the database keeps (migration 0010's
triggers) answers what a recount of the deliveries answers, on PostgreSQL and SQLite, through
inserts, updates, deletes and compactions, and while they run side by side; failed verifies by
reason, counted off the verify's path; recipient domains grouped by registrable domain; one
application at a time."""

import random
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import DateTime, String, column, delete, func, insert, select, table, update
from sqlalchemy.ext.asyncio import AsyncEngine

from otp_service.db.engine import create_engine, create_sessionmaker
from otp_service.db.migrate import upgrade_engine
from otp_service.db.models import STAGES, Delivery, VerifyFailureCount, WebhookEvent, delivery_stats
from otp_service.delivery import repository
from otp_service.delivery.repository import StatsGroup, hour_of
from otp_service.delivery.stats import OTHER, TOP_DOMAINS, DeliveryStats, StatsCompaction, quantile
from otp_service.delivery.verify_failures import VerifyFailures
from otp_service.errors import NotFound, Unavailable
from otp_service.otp.store import VerifyStatus
from otp_service.settings import Settings
from otp_service.verifies import VerifyFailure
from tests.conftest import PG_HOST, PG_PORT, create_database, drop_database, pg_url
from tests.support import Proxy, console_emails, drain, unique_email
from tests.test_admin import AUTH, KEY
from tests.test_store_contract import Env, env, send_req, verify_req  # noqa: F401 - env: a fixture

STATS = "/api/v1/admin/stats"


def test_a_quantile_is_interpolated_within_its_bucket() -> None:
    # STAGE_BOUNDS (0.5, 1, 2, 5, ...): 10 under 1 s, 10 more under 2 s, then the total 20.
    cumulative = [0, 10, 20, *([20] * 9), 20]
    assert quantile(0.5, cumulative) == pytest.approx(1.0)
    assert quantile(0.95, cumulative) == pytest.approx(1.9)
    assert quantile(0.5, [0] * 13) is None
    assert quantile(0.5, [*([0] * 12), 4]) == 3600.0  # all past the last bound: that bound


@pytest.fixture(params=["postgresql", "sqlite"])
async def engine(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> AsyncIterator[AsyncEngine]:
    url = database_url if request.param == "postgresql" else f"sqlite+aiosqlite:///{tmp_path / 'otp.db'}"
    engine = create_engine(url)
    if request.param == "sqlite":
        await upgrade_engine(engine)
    yield engine
    await engine.dispose()


def app_id() -> str:
    """An application of the test's own: the test database is shared, the roll-up is per app."""
    return f"t-{secrets.token_hex(6)}"


# Durations on and around the bucket bounds (seconds), and none.
TIMES = ("created_at", "queued_at", "delivered_at", "verified_at")
DURATIONS = [None, 0.2, 0.5, 0.5001, 1, 1.9999, 2, 3, 5, 29.5, 30, 61, 300, 599.999, 1800, 3600, 3600.5, 9000]


def rows(app: str, now: datetime, n: int, seed: int) -> list[dict[str, Any]]:
    """`n` deliveries of `app` over the last 3 hours and two days ago: three providers and none,
    outcomes, and each stage's duration drawn from DURATIONS."""
    rnd = random.Random(seed)
    made = []
    for i in range(n):
        created = now - timedelta(minutes=rnd.randrange(0, 180)) if i % 9 else now - timedelta(days=2)
        created = created.replace(microsecond=rnd.choice([0, 0, rnd.randrange(1_000_000)]))

        def after(base: datetime) -> datetime | None:
            seconds = rnd.choice(DURATIONS)
            return None if seconds is None else base + timedelta(seconds=seconds)

        queued = after(created)
        made.append({
            "job_id": f"{secrets.token_hex(8)}-0", "app": app,
            "email": f"u{i}@{rnd.choice(['a.example', 'mail.a.example', 'b.example.co.uk', 'c.example'])}",
            "outcome": rnd.choice(["sent", "sent", "sent", "failed", "superseded"]),
            "provider": rnd.choice(["resend", "ses", "smtp", None]), "created_at": created,
            "queued_at": None if queued is None else created - (queued - created),
            "delivered_at": after(created), "verified_at": after(created),
        })  # fmt: skip
    return made


async def groups(
    engine: AsyncEngine, since_hour: int, app: str
) -> tuple[dict[Any, StatsGroup], dict[Any, StatsGroup]]:
    """(the roll-up's groups, the recount's), by (provider, domain)."""
    async with engine.connect() as conn:
        rolled = await repository.rollup_groups(conn, since_hour, app=app)
        counted = await repository.stats_groups(conn, since_hour, app=app)
    return {(g.provider, g.domain): g for g in rolled}, {(g.provider, g.domain): g for g in counted}


async def compact(engine: AsyncEngine) -> None:
    while True:
        async with engine.begin() as conn:
            done = await repository.compact_stats(conn, keys=100_000)
        if done is not None:
            return


async def test_the_rollup_answers_what_a_recount_of_the_rows_answers(engine: AsyncEngine) -> None:
    app, now = app_id(), datetime.now(UTC)
    made = rows(app, now, 400, seed=31)
    async with engine.begin() as conn:
        await conn.execute(insert(Delivery), made[:200])  # one statement for many rows
    for row in made[200:]:  # and one statement per row
        async with engine.begin() as conn:
            await conn.execute(insert(Delivery).values(row))
    rnd = random.Random(4)
    async with engine.begin() as conn:  # what the webhooks, the verify and a correction write
        jobs = [r["job_id"] for r in made]
        for job in rnd.sample(jobs, 60):
            await conn.execute(
                update(Delivery).where(Delivery.job_id == job).values(delivered_at=now + timedelta(seconds=4))
            )
        await conn.execute(update(Delivery).where(Delivery.job_id.in_(rnd.sample(jobs, 40))).values(
            verified_at=now + timedelta(seconds=45)
        ))  # fmt: skip
        await conn.execute(
            update(Delivery).where(Delivery.job_id.in_(rnd.sample(jobs, 30))).values(attempts=7)
        )
        await conn.execute(
            update(Delivery).where(Delivery.job_id.in_(rnd.sample(jobs, 10))).values(provider="ses")
        )
    for since_hour in (hour_of(now) - 72, hour_of(now) - 2, hour_of(now)):
        rolled, counted = await groups(engine, since_hour, app)
        assert rolled == counted
    async with engine.begin() as conn:  # retention: every row of one domain, some of the others
        await conn.execute(delete(Delivery).where(Delivery.app == app, Delivery.email.like("%@c.example")))
        await conn.execute(delete(Delivery).where(Delivery.job_id.in_(rnd.sample(jobs, 50))))
    await compact(engine)
    rolled, counted = await groups(engine, hour_of(now) - 72, app)
    assert rolled == counted
    assert sum(g.accepted for g in counted.values()) > 200
    assert not any(domain == "c.example" for _, domain in rolled)
    async with engine.connect() as conn:  # one row per key once compacted; none for c.example
        per_key = (await conn.execute(
            select(func.count()).where(delivery_stats.c.app == app)
            .group_by(delivery_stats.c.hour, delivery_stats.c.provider, delivery_stats.c.domain)
        )).scalars().all()  # fmt: skip
        kept = await conn.scalar(
            select(func.count()).where(delivery_stats.c.app == app, delivery_stats.c.domain == "c.example")
        )
    assert set(per_key) == {1}
    assert kept == 0


async def test_a_change_written_while_a_compaction_runs_is_kept(database_url: str) -> None:
    engine = create_engine(database_url)
    app, now = app_id(), datetime.now(UTC)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(Delivery), rows(app, now, 30, seed=5))
        async with engine.connect() as writer:
            await writer.begin()
            await writer.execute(insert(Delivery), rows(app, now, 20, seed=6))  # not committed yet
            await writer.execute(update(Delivery).where(Delivery.app == app).values(delivered_at=now))
            await compact(engine)  # in a transaction of its own: neither waits for the other
            await writer.commit()
        await StatsCompaction(sessions=create_sessionmaker(engine)).compact()  # the worker's loop's pass
        rolled, counted = await groups(engine, hour_of(now) - 72, app)
        assert rolled == counted
        assert sum(g.accepted for g in counted.values()) == 50
        assert sum(g.delivered for g in counted.values()) == 50
    finally:
        await engine.dispose()


AT_0009 = table(
    "deliveries", column("job_id", String), column("email", String), column("outcome", String),
    column("provider", String), *(column(c, DateTime(timezone=True)) for c in TIMES),
)  # fmt: skip
"""deliveries as migration 0009 left it (no app)."""


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
async def test_migration_0010_sums_the_rows_already_there(backend: str, tmp_path: Path) -> None:
    from alembic import command

    from otp_service.db.migrate import alembic_config

    name = f"otp_test_0010_{secrets.token_hex(4)}"
    url = pg_url(name) if backend == "postgresql" else f"sqlite+aiosqlite:///{tmp_path / 'otp.db'}"
    if backend == "postgresql":
        await create_database(name)
    engine = create_engine(url)

    def to(revision: str) -> Any:
        def run(connection: Any) -> None:
            cfg = alembic_config()
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)

        return run

    try:
        now = datetime.now(UTC)
        async with engine.begin() as conn:
            await conn.run_sync(to("0009"))
            await conn.execute(insert(AT_0009), [
                {k: v for k, v in r.items() if k != "app"} for r in rows("", now, 120, seed=10)
            ])  # fmt: skip
        async with engine.begin() as conn:
            await conn.run_sync(to("head"))
        rolled, counted = await groups(engine, hour_of(now) - 72, "")
        assert rolled == counted
        assert sum(g.accepted for g in rolled.values()) == 120
    finally:
        await engine.dispose()
        if backend == "postgresql":
            await drop_database(name)


async def test_failed_verifies_are_kept_for_the_retention_only(engine: AsyncEngine) -> None:
    app, now = app_id(), datetime.now(UTC)
    async with engine.begin() as conn:
        await repository.add_verify_failures(conn, {
            (app, hour_of(now - timedelta(days=31)), "ses", "a.example", "expired"): 1,
            (app, hour_of(now - timedelta(days=29)), "ses", "a.example", "expired"): 2,
        })  # fmt: skip
        await repository.add_verify_failures(
            conn, {(app, hour_of(now - timedelta(days=29)), "ses", "a.example", "expired"): 3}
        )
        assert await repository.delete_verify_failures_older(conn, now - timedelta(days=30), 1000) >= 1
        assert await repository.verify_failures(conn, 0, app=app) == [("ses", "a.example", "expired", 5)]


async def seed(engine: AsyncEngine, provider: str, domain: str, now: datetime, app: str = "") -> None:
    """10 emails through `provider` to `domain` in the last hour: accepted 3 s before sent, 6
    delivered 4 s after, 3 verified 20 s after; one failed; one sent 2 days ago; 2 bounces and
    one complaint matched to them."""
    made, tag = [], secrets.token_hex(4)  # message ids unique to this seed
    for n in range(10):
        sent = now - timedelta(minutes=n + 1)
        made.append({
            "job_id": f"{secrets.token_hex(6)}-0", "email": f"u{n}@{domain}", "outcome": "sent",
            "provider": provider, "provider_message_id": f"{tag}-{n}", "created_at": sent,
            "queued_at": sent - timedelta(seconds=3), "app": app,
            "delivered_at": sent + timedelta(seconds=4) if n < 6 else None,
            "verified_at": sent + timedelta(seconds=20) if n < 3 else None,
        })  # fmt: skip
    made.append({"job_id": f"{secrets.token_hex(6)}-0", "email": f"x@{domain}", "outcome": "failed", "app": app,
                 "provider": provider, "provider_message_id": None, "created_at": now - timedelta(minutes=3),
                 "queued_at": now - timedelta(minutes=4), "delivered_at": None, "verified_at": None})  # fmt: skip
    made.append({"job_id": f"{secrets.token_hex(6)}-0", "email": f"old@{domain}", "outcome": "sent", "app": app,
                 "provider": provider, "provider_message_id": f"{tag}-old",
                 "created_at": now - timedelta(days=2), "queued_at": now - timedelta(days=2),
                 "delivered_at": None, "verified_at": None})  # fmt: skip
    events = [
        {"provider": provider, "event_id": f"{tag}-e{n}", "event_type": kind, "outcome": "suppressed",
         "payload": {}, "message_id": f"{tag}-{n}", "received_at": now - timedelta(seconds=30)}
        for n, kind in ((7, "email.bounced"), (8, "email.bounced"), (9, "email.complained"))
    ]  # fmt: skip
    async with engine.begin() as conn:
        await conn.execute(insert(Delivery), made)
        await conn.execute(insert(WebhookEvent), events)


async def test_one_application_is_counted_by_provider_and_registrable_domain(engine: AsyncEngine) -> None:
    app, now, base = app_id(), datetime.now(UTC), f"{secrets.token_hex(4)}.co.uk"
    await seed(engine, "resend", base, now, app)
    await seed(engine, "ses", f"mail.{base}", now, app)  # the same registrable domain
    await seed(engine, "ses", f"{secrets.token_hex(4)}.example", now, app_id())  # another app's
    async with engine.begin() as conn:  # two failed verifies, as VerifyFailures adds them
        await repository.add_verify_failures(conn, {
            (app, hour_of(now), "ses", f"mail.{base}", "superseded"): 2,
            (app, hour_of(now) - 30, "ses", base, "expired"): 5,  # before the window
        })  # fmt: skip
    stats = await DeliveryStats(sessions=create_sessionmaker(engine), apps={"", app}).stats(hours=1, app=app)
    assert set(stats.by_domain) == {base}
    assert set(stats.by_provider) == {"resend", "ses"}
    mine = stats.by_domain[base]
    assert (mine.accepted, mine.sent, mine.delivered, mine.verified) == (22, 20, 12, 6)
    assert (mine.bounced, mine.complained) == (4, 2)
    assert mine.conversion == pytest.approx(0.3)
    assert mine.failures == {**dict.fromkeys(VerifyFailure, 0), VerifyFailure.SUPERSEDED: 2}
    assert stats.by_provider["ses"].failures[VerifyFailure.SUPERSEDED] == 2
    # 3 s lies in the 2-5 s bucket, 4 s too, 20 s in 10-30 s.
    assert all(2 <= p <= 5 for p in mine.percentiles("accepted_to_sent") if p is not None)
    assert all(2 <= p <= 5 for p in mine.percentiles("sent_to_delivered") if p is not None)
    assert all(10 <= p <= 30 for p in mine.percentiles("sent_to_verified") if p is not None)
    assert stats.since == datetime.fromtimestamp((hour_of(now) - 1) * 3600, UTC)
    with pytest.raises(NotFound):
        await DeliveryStats(sessions=create_sessionmaker(engine), apps={""}).stats(hours=1, app=app)


async def test_beyond_twenty_domains_the_rest_is_other_and_groups_add_up(engine: AsyncEngine) -> None:
    app, now = app_id(), datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(insert(Delivery), [
            {"job_id": f"{secrets.token_hex(6)}-0", "email": f"u{n}@d{n % 25}.example", "outcome": "sent",
             "provider": "ses", "created_at": now - timedelta(seconds=n), "app": app,
             "queued_at": now - timedelta(seconds=n + 1)}
            for n in range(100)
        ])  # fmt: skip
    stats = await DeliveryStats(sessions=create_sessionmaker(engine)).stats(hours=1, app=app)
    assert len(stats.by_domain) == TOP_DOMAINS + 1
    assert stats.by_domain[OTHER].accepted == 20
    total = stats.total
    assert total.accepted == 100 == sum(t.accepted for t in stats.by_domain.values())
    assert total.buckets == {s: [sum(c) for c in zip(*(t.buckets[s] for t in stats.by_domain.values()), strict=True)]
                             for s in STAGES}  # fmt: skip


async def test_the_route_answers_one_application_and_refuses_an_unknown_one(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    app = app_id()
    settings = make_settings(admin_api_keys=[KEY], worker_enabled=False, apps={app: {}})
    async with open_app(settings) as client:
        await seed(client.db, "resend", f"{secrets.token_hex(4)}.example", datetime.now(UTC), app)
        res = await client.http.get(STATS, params={"hours": 2, "app": app}, headers=AUTH)
        assert res.status_code == 200, res.text
        body = res.json()
        assert (body["hours"], body["app"]) == (2, app)
        assert (body["total"]["sent"], body["by_provider"]["resend"]["verified"]) == (10, 3)
        assert set(body["total"]["accepted_to_sent"]) == {"p50", "p95"}
        assert body["total"]["verify_failures"] == dict.fromkeys(VerifyFailure, 0)
        assert (await client.http.get(STATS, headers=AUTH)).json()["app"] == ""  # the service-wide one
        missing = await client.http.get(STATS, params={"app": "nope"}, headers=AUTH)
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
        for params in ({"hours": 0}, {"app": "Not An Id"}):
            assert (await client.http.get(STATS, params=params, headers=AUTH)).status_code == 422
        assert (await client.http.get(STATS)).status_code == 401


def other_than(code: str) -> str:
    return f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"


@pytest.mark.parametrize("store", ["redis", "embedded"])
async def test_failed_verifies_are_counted_by_reason_provider_and_domain(
    store: str, open_app: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A database of its own, so that the totals are this test's."""
    settings = make_settings(
        admin_api_keys=[KEY], database_url=f"sqlite+aiosqlite:///{tmp_path / 'otp.db'}", rate_limit_ttl=0,
        max_attempts=3, conversion_min_sends=1_000_000, **({"redis_url": None} if store == "embedded" else {}),
    )  # fmt: skip
    email, stranger = unique_email("mail.shop.example.co.uk"), unique_email("shop.example.co.uk")
    verify = "/api/v1/auth/otp/verify"
    async with open_app(settings) as app:

        async def send() -> str:
            assert (await app.http.post("/api/v1/auth/otp/send", json={"email": email})).status_code == 202
            await drain(app)
            return console_emails(capsys.readouterr().out)[-1].code

        async def refused(code: str, address: str = email) -> str:
            res = await app.http.post(verify, json={"email": address, "code": code})
            assert res.status_code == 400, res.text
            answer: str = res.json()["code"]
            return answer

        first = await send()
        assert await refused(other_than(first)) == "invalid_code"  # wrong_code
        second = await send()
        assert await refused(first) == "invalid_code"  # superseded
        assert await refused(other_than(second)) == "invalid_code"  # wrong_code
        assert await refused(other_than(second)) == "max_attempts_reached"  # max_attempts
        assert await refused(second) == "code_expired"  # expired
        assert await refused("123456", stranger) == "code_expired"  # expired, never emailed
        res = await app.http.get(STATS, params={"hours": 1}, headers=AUTH)
    assert res.status_code == 200, res.text
    body = res.json()
    reasons = {"wrong_code": 2, "superseded": 1, "max_attempts": 1, "expired": 2}
    assert body["total"]["verify_failures"] == reasons
    assert body["by_domain"]["example.co.uk"]["verify_failures"] == reasons
    assert body["by_provider"]["console"]["verify_failures"] == {**reasons, "expired": 1}
    assert body["by_provider"]["none"]["verify_failures"] == {**dict.fromkeys(reasons, 0), "expired": 1}


async def test_a_verify_answers_with_the_database_down_and_its_failure_is_added_after(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """The verify's path never touches the database: its refusal is counted in the process and
    added once the database answers again; a pass that met the outage loses nothing."""
    proxy = Proxy(PG_HOST, PG_PORT)
    await proxy.start()
    database = create_engine(make_settings().database_url)
    name = database.url.database
    settings = make_settings(
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{proxy.port}/{name}", worker_enabled=False
    )
    domain = f"{secrets.token_hex(5)}.example"
    counted = (
        select(func.sum(VerifyFailureCount.count))
        .where(VerifyFailureCount.domain == domain)
    )  # fmt: skip
    engine = create_engine(settings.database_url)
    try:
        async with open_app(settings) as app:
            await proxy.cut()
            res = await app.http.post(
                "/api/v1/auth/otp/verify", json={"email": f"a@{domain}", "code": "123456"}
            )
            assert (res.status_code, res.json()["code"]) == (400, "code_expired")
            failures = VerifyFailures(sessions=create_sessionmaker(engine))
            failures.failed(f"b@{domain}", VerifyFailure.WRONG_CODE)
            with pytest.raises(Unavailable):
                await failures.flush()
            await proxy.start()
            assert await failures.flush() == 1  # kept for the next pass
        async with database.connect() as conn:  # the app's own count, added as it stopped
            assert await conn.scalar(counted) == 2
    finally:
        await proxy.cut()
        await engine.dispose()
        await database.dispose()


async def test_a_wrong_code_that_was_the_replaced_code_is_told_apart(env: Env) -> None:  # noqa: F811
    """verify.lua's third answer (the admin stats' superseded), on every store."""
    await env.store.decide_send(send_req(cooldown_ms=0, code_ttl_ms=2_000))
    await env.store.decide_send(send_req(cooldown_ms=0, code_hash="c" * 64))
    old = await env.store.verify(verify_req())  # "a": the code the second send replaced
    assert (old.status, old.superseded, old.attempts_remaining) == (VerifyStatus.INVALID, True, 4)
    wrong = await env.store.verify(verify_req(code_hash="b" * 64))
    assert (wrong.status, wrong.superseded) == (VerifyStatus.INVALID, False)
    for _ in range(2):
        await env.store.verify(verify_req(code_hash="b" * 64))
    last = await env.store.verify(verify_req())
    assert (last.status, last.superseded) == (VerifyStatus.MAX_ATTEMPTS, True)
    # Only the one replaced, and only while it would have lived.
    await env.store.decide_send(send_req("addr-2", cooldown_ms=0))
    await env.store.decide_send(send_req("addr-2", cooldown_ms=0, code_hash="c" * 64))
    await env.store.decide_send(send_req("addr-2", cooldown_ms=0, code_hash="d" * 64))
    assert (await env.store.verify(verify_req("addr-2"))).superseded is False  # two sends back
    assert (await env.store.verify(verify_req("addr-2", code_hash="c" * 64))).superseded is True
    await env.store.decide_send(send_req("addr-3", cooldown_ms=0, code_ttl_ms=400))
    await env.store.decide_send(send_req("addr-3", cooldown_ms=0, code_hash="c" * 64))
    await env.advance(500)
    assert (await env.store.verify(verify_req("addr-3"))).superseded is False  # it would have expired
    assert (await env.store.verify(verify_req("addr-3", code_hash="c" * 64))).status is VerifyStatus.APPROVED


async def test_a_flood_of_failed_verifies_looks_up_a_bounded_number_of_addresses(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong-code flood over many addresses must not become as many database look-ups: past
    LOOKUP_LIMIT addresses a pass, failures still count, by reason and domain, as provider 'none';
    the addresses with the most failures are the ones attributed."""
    monkeypatch.setattr("otp_service.delivery.verify_failures.LOOKUP_LIMIT", 2)
    app, now = app_id(), datetime.now(UTC)
    domain = f"{app}.example"
    async with engine.begin() as conn:
        await conn.execute(insert(Delivery), [
            {"job_id": f"{secrets.token_hex(6)}-0", "email": f"u{n}@{domain}", "outcome": "sent", "provider": "ses",
             "created_at": now, "app": app, "queued_at": now}
            for n in range(5)
        ])  # fmt: skip
    failures = VerifyFailures(sessions=create_sessionmaker(engine))
    for n in range(5):
        for _ in range(5 - n):  # u0 fails most, then u1, ...
            failures.failed(f"u{n}@{domain}", VerifyFailure.WRONG_CODE, app)
    assert await failures.flush() == 15
    async with engine.connect() as conn:
        v = VerifyFailureCount
        rows = (
            await conn.execute(select(v.provider, v.count).where(v.app == app).order_by(v.provider))
        ).all()
    assert [tuple(r) for r in rows] == [("none", 6), ("ses", 9)]  # u0 (5) and u1 (4) attributed

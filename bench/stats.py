"""GET /api/v1/admin/stats over a million delivery rows (issue 31): a fresh PostgreSQL database,
migrated to head, filled with generate_series (24 h of sends across 3 providers and 2,000
recipient domains: most sent, delivered and some verified, a few failed; bounces and complaints
matched to 2% of them), the roll-up compacted as the worker does, then a live tail written as
the worker and the webhooks write it (one statement per delivery, then its delivered time), and
the endpoint's own queries (delivery/stats.py) timed; beside them, the recount from the rows
(what the endpoint ran before the roll-up) and the triggers' cost per written row.

    .venv/bin/python -m bench.stats [--rows 1000000] [--tail 2000] [--host 127.0.0.1] [--port 5432]

Prints each figure (median and worst of the timed runs, after one warm-up); the README's
"Performance" section holds them."""

import argparse
import asyncio
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
from sqlalchemy.ext.asyncio import create_async_engine

from otp_service.db.engine import create_sessionmaker
from otp_service.db.migrate import upgrade_engine
from otp_service.delivery import repository
from otp_service.delivery.stats import DeliveryStats, StatsCompaction

FILL = """
INSERT INTO deliveries (job_id, email, outcome, provider, provider_message_id, created_at, queued_at,
                        attempts, delivered_at, verified_at)
SELECT 'bench-' || n,
       'user' || n || '@d' || (n % 2000) || '.example',
       CASE WHEN n % 50 = 0 THEN 'failed' ELSE 'sent' END,
       (ARRAY['resend', 'ses', 'smtp'])[1 + n % 3],
       'm-' || n,
       now() - (n % 86000) * interval '1 second',
       now() - (n % 86000) * interval '1 second' - (0.2 + (n % 40) / 4.0) * interval '1 second',
       1,
       CASE WHEN n % 10 < 8 THEN now() - (n % 86000) * interval '1 second' + (n % 7) * interval '1 second' END,
       CASE WHEN n % 10 < 6 THEN now() - (n % 86000) * interval '1 second' + (5 + n % 90) * interval '1 second' END
FROM generate_series(1, $1::int) AS n
"""
EVENTS = """
INSERT INTO webhook_events (provider, event_id, event_type, outcome, payload, received_at, message_id)
SELECT d.provider, 'e-' || d.id, CASE WHEN d.id / 50 % 5 = 0 THEN 'email.complained' ELSE 'email.bounced' END,
       'suppressed', '{}', d.created_at + interval '1 minute', d.provider_message_id
FROM deliveries d WHERE d.id % 50 = 1
"""
TAIL = """
INSERT INTO deliveries (job_id, email, outcome, provider, provider_message_id, created_at, queued_at, attempts)
VALUES ($1, $2, 'sent', $3, $1, now(), now() - interval '2 seconds', 1)
"""
DELIVERED = "UPDATE deliveries SET delivered_at = now() + interval '3 seconds' WHERE job_id = $1"


async def timed(runs: int, do: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """(median, worst) seconds of `runs` calls after one warm-up."""
    await do()
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        await do()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), max(timings)


async def tail(conn: asyncpg.Connection, rows: int, tag: str) -> float:
    """Seconds per delivery of writing `rows` as the worker and the webhooks do: one INSERT per
    delivery, then one UPDATE of its delivered time."""
    started = time.perf_counter()
    for n in range(rows):
        job = f"{tag}-{n}"
        await conn.execute(TAIL, job, f"tail{n}@d{n % 2000}.example", ("resend", "ses", "smtp")[n % 3])
        await conn.execute(DELIVERED, job)
    return (time.perf_counter() - started) / rows


async def trigger_cost(conn: asyncpg.Connection, rows: int, rounds: int = 5) -> tuple[float, float]:
    """(with the triggers, without) median seconds per delivery written as `tail` writes it, in
    alternating rounds (the machine's speed drifts); the rows written without are deleted."""
    timings: dict[bool, list[float]] = {True: [], False: []}
    for n in range(rounds):
        for on in (True, False):
            await conn.execute(f"ALTER TABLE deliveries {'ENABLE' if on else 'DISABLE'} TRIGGER USER")
            timings[on].append(await tail(conn, rows // rounds, f"{'tail' if on else 'bare'}{n}"))
    await conn.execute("DELETE FROM deliveries WHERE job_id LIKE 'bare%'")
    await conn.execute("ALTER TABLE deliveries ENABLE TRIGGER USER")
    return statistics.median(timings[True]), statistics.median(timings[False])


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tail", type=int, default=2_000, help="deliveries written after the compaction")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--user", default="postgres")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the database (its name is printed)")
    args = parser.parse_args()
    name = f"bench_stats_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(host=args.host, port=args.port, user=args.user, database="postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    # The service's engine but for the statement timeout: the recount of a million rows may
    # take longer than the service's 5 s on a busy machine.
    engine = create_async_engine(
        f"postgresql+asyncpg://{args.user}@{args.host}:{args.port}/{name}",
        connect_args={"command_timeout": 120},
    )
    sessions = create_sessionmaker(engine)
    try:
        await upgrade_engine(engine)
        conn = await asyncpg.connect(host=args.host, port=args.port, user=args.user, database=name)
        try:
            started = time.perf_counter()
            await conn.execute(FILL, args.rows)
            filled = time.perf_counter() - started
            await conn.execute(EVENTS)
            started = time.perf_counter()
            keys = await StatsCompaction(sessions=sessions).compact()
            compacted = time.perf_counter() - started
            await conn.execute("VACUUM ANALYZE deliveries")
            await conn.execute("VACUUM ANALYZE webhook_events")
            await conn.execute("VACUUM ANALYZE delivery_stats")
            print(f"filled {args.rows:,} deliveries in {filled:.1f} s (one statement, the triggers included); "
                  f"compacted {keys:,} keys in {compacted:.1f} s")  # fmt: skip
            with_triggers, without = await trigger_cost(conn, args.tail)
            print(f"a delivery written and marked delivered, one statement each: {with_triggers * 1e6:,.0f} µs "
                  f"with the triggers, {without * 1e6:,.0f} µs without (median of 5 alternating rounds, "
                  f"{args.tail:,} of each in all)")  # fmt: skip
            pending = await conn.fetchval("SELECT count(*) FROM delivery_stats WHERE state = 0")
            rolled = await conn.fetchval("SELECT count(*) FROM delivery_stats")
            print(f"delivery_stats: {rolled:,} rows, {pending:,} of them changes not yet compacted")
        finally:
            await conn.close()
        stats = DeliveryStats(sessions=sessions)
        result = await stats.stats(24)
        median, worst = await timed(args.runs, lambda: stats.stats(24))
        total = result.total
        print(f"window from {result.since:%H:%M} UTC: accepted {total.accepted:,}, sent {total.sent:,}, "
              f"delivered {total.delivered:,}, verified {total.verified:,}, bounced {total.bounced:,}, "
              f"complained {total.complained:,}, {len(result.by_provider)} providers, "
              f"{len(result.by_domain)} domain groups")  # fmt: skip
        print(f"stats(24 h), roll-up: median {ms(median)}, worst {ms(worst)} over {args.runs} runs")
        since_hour = repository.hour_of(result.since)

        async def recount() -> None:  # what the endpoint read before: every row of the window
            async with sessions() as session:
                await repository.stats_groups(session, since_hour)
                await repository.stats_events(session, result.since)

        median, worst = await timed(max(3, args.runs // 2), recount)
        print(f"stats(24 h), recount of the rows: median {ms(median)}, worst {ms(worst)}")
        async with sessions() as session:
            rolled_up = sorted(
                await repository.rollup_groups(session, since_hour), key=lambda g: (g.provider, g.domain)
            )
            counted = sorted(
                await repository.stats_groups(session, since_hour), key=lambda g: (g.provider, g.domain)
            )
        print(f"roll-up equals the recount: {rolled_up == counted} ({len(counted):,} groups) "
              f"at {datetime.now(UTC) - timedelta(microseconds=0):%Y-%m-%d %H:%M} UTC")  # fmt: skip
    finally:
        await engine.dispose()
        if args.keep:
            print(f"kept database {name}")
        else:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())

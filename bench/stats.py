"""GET /api/v1/admin/stats over a million delivery rows (issue 31): a fresh PostgreSQL database,
migrated to head, filled with generate_series (24 h of sends across 3 providers and 2,000
recipient domains: most sent, delivered and some verified, a few failed; bounces and complaints
matched to 2% of them), then the endpoint's own queries (delivery/stats.py) timed.

    .venv/bin/python -m bench.stats [--rows 1000000] [--host 127.0.0.1] [--port 5432] [--user postgres]

Prints the median and the worst of the timed runs (after one warm-up); the README's
"Performance" section holds the figure."""

import argparse
import asyncio
import secrets
import statistics
import time

import asyncpg

from otp_service.db.engine import create_engine, create_sessionmaker
from otp_service.db.migrate import upgrade_engine
from otp_service.delivery.stats import DeliveryStats

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


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--user", default="postgres")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the database (its name is printed)")
    args = parser.parse_args()
    name = f"bench_stats_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(host=args.host, port=args.port, user=args.user, database="postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    engine = create_engine(f"postgresql+asyncpg://{args.user}@{args.host}:{args.port}/{name}")
    try:
        await upgrade_engine(engine)
        conn = await asyncpg.connect(host=args.host, port=args.port, user=args.user, database=name)
        try:
            started = time.perf_counter()
            await conn.execute(FILL, args.rows)
            await conn.execute(EVENTS)
            await conn.execute("VACUUM ANALYZE deliveries")
            await conn.execute("VACUUM ANALYZE webhook_events")
            print(f"filled {args.rows:,} deliveries in {time.perf_counter() - started:.1f} s")
        finally:
            await conn.close()
        stats = DeliveryStats(sessions=create_sessionmaker(engine))
        result = await stats.stats(24)  # warm-up
        timings = []
        for _ in range(args.runs):
            started = time.perf_counter()
            result = await stats.stats(24)
            timings.append(time.perf_counter() - started)
        total = result.total
        print(f"window 24 h: accepted {total.accepted:,}, sent {total.sent:,}, delivered {total.delivered:,}, "
              f"verified {total.verified:,}, bounced {total.bounced:,}, complained {total.complained:,}, "
              f"{len(result.by_provider)} providers, {len(result.by_domain)} domain groups")  # fmt: skip
        print(f"stats(24 h): median {statistics.median(timings) * 1000:.0f} ms, worst {max(timings) * 1000:.0f} ms "
              f"over {args.runs} runs")  # fmt: skip
    finally:
        await engine.dispose()
        if args.keep:
            print(f"kept database {name}")
        else:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())

import asyncio
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from otp_service.app import create_app
from otp_service.db.migrate import upgrade
from otp_service.settings import Settings
from tests.conftest import PG_HOST, PG_PORT, PG_USER, create_database, drop_database, pg_url


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _pg_connections(database: str) -> int:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database)
        return count
    finally:
        await conn.close()


async def _redis_clients(redis: Redis) -> int:
    return len(await redis.client_list())


async def test_start_and_stop_release_every_connection(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], redis: Redis
) -> None:
    # A database of this test's own: the shared one also holds connections that other tests'
    # engines, left to the garbage collector, close whenever it runs.
    database = f"otp_lifecycle_{secrets.token_hex(4)}"
    await create_database(database)
    try:
        await upgrade(pg_url(database))
        settings = make_settings(database_url=pg_url(database))
        redis_before = await _redis_clients(redis)
        async with open_app(settings) as app:
            for _ in range(3):
                assert (await app.http.get("/readyz")).status_code == 200
            assert await _pg_connections(database) >= 1
            assert await _redis_clients(redis) > redis_before
        # A PostgreSQL backend leaves pg_stat_activity a moment after its client has closed: a
        # leak is one that stays.
        deadline = asyncio.get_running_loop().time() + 5
        while (left := await _pg_connections(database)) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        assert left == 0
        assert await _redis_clients(redis) == redis_before
    finally:
        await drop_database(database)


async def test_nothing_connects_at_create_time(settings: Settings, redis: Redis) -> None:
    before = await _redis_clients(redis)
    create_app(settings)
    assert await _redis_clients(redis) == before


async def test_ready_when_redis_and_database_answer(client: Any) -> None:
    res = await client.http.get("/readyz")
    assert res.status_code == 200
    assert res.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}
    assert (await client.http.get("/healthz")).json() == {"status": "ok"}


@pytest.mark.parametrize("down", ["redis", "database"])
async def test_not_ready_names_what_is_down(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], down: str
) -> None:
    port = _closed_port()
    override = (
        {"redis_url": f"redis://127.0.0.1:{port}/0"}
        if down == "redis"
        else {"database_url": f"postgresql+asyncpg://{PG_USER}@127.0.0.1:{port}/nope"}
    )
    async with open_app(make_settings(**override, worker_enabled=False)) as app:
        started = time.monotonic()
        res = await app.http.get("/readyz")
        elapsed = time.monotonic() - started
    assert res.status_code == 503
    assert res.headers["content-type"] == "application/problem+json"
    body = res.json()
    assert body["code"] == "unavailable"
    assert body["checks"][down] == "down"
    assert body["checks"]["redis" if down == "database" else "database"] == "ok"
    assert int(res.headers["retry-after"]) == body["retry_after"] >= 1
    assert elapsed < 5


async def test_not_ready_when_redis_stops_answering(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """A real redis-server of the test's own, stopped while the service runs."""
    port = _closed_port()
    proc = await asyncio.create_subprocess_exec(
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        probe = Redis(port=port)
        for _ in range(50):
            try:
                await probe.ping()
                break
            except Exception:
                await asyncio.sleep(0.1)
        await probe.aclose()
        settings = make_settings(redis_url=f"redis://127.0.0.1:{port}/0", worker_enabled=False)
        async with open_app(settings) as app:
            assert (await app.http.get("/readyz")).status_code == 200
            proc.terminate()
            await proc.wait()
            res = await app.http.get("/readyz")
            assert res.status_code == 503
            assert res.json()["checks"]["redis"] == "down"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

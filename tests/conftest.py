"""Real PostgreSQL and Redis for every test: a throwaway database per run, a key space per test."""

import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from otp_service.api.state import STATE_KEY, WebState
from otp_service.app import create_app
from otp_service.db.engine import create_engine
from otp_service.db.migrate import upgrade
from otp_service.settings import Settings
from tests.support import ProviderFake

REDIS_HOST = os.environ.get("OTP_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("OTP_TEST_REDIS_PORT", "6379"))
PG_HOST = os.environ.get("OTP_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("OTP_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("OTP_TEST_PG_USER", "postgres")
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
TEST_SECRET = "test-secret-key-0123456789abcdef"
METRICS_TOKEN = "test-metrics-token-0123456789"
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}
"""What the in-process tests' clients (not loopback) send to read /metrics."""


def pg_url(database: str) -> str:
    return f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


async def create_database(name: str) -> None:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database for this test run, dropped afterwards."""
    name = f"otp_test_{secrets.token_hex(6)}"
    await create_database(name)
    url = pg_url(name)
    await upgrade(url)
    yield url
    await drop_database(name)


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL, socket_timeout=5)
    yield client
    await client.aclose()


@pytest.fixture
async def key_prefix(redis: Redis) -> AsyncIterator[str]:
    """A key space of this test's own; every key under it is removed afterwards."""
    prefix = f"otptest{secrets.token_hex(5)}"
    yield prefix
    keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await redis.delete(*keys)


@pytest.fixture
def make_settings(database_url: str, key_prefix: str) -> Callable[..., Settings]:
    """Settings for the production shape (PostgreSQL + Redis), with per-test overrides."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "redis_url": REDIS_URL,
            "redis_key_prefix": key_prefix,
            "secret_key": TEST_SECRET,
            "metrics_token": METRICS_TOKEN,
            # The tests share one database: bounces other tests recorded would trace to the test
            # client's subnet and block it. Tests of the source block set their own limit.
            "reputation_source_limit": 1_000_000,
            # This machine's resolver answers NXDOMAIN for every name, so the check that `auto`
            # turns on with resend/ses is off here; tests/test_deliverability.py runs its own DNS.
            "check_deliverability": "false",
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


class AppClient:
    """An app with its lifespan running, an httpx client talking to it in-process, the lifespan's
    state (the domain objects the routes get) and an engine of the test's own on its database."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient, web: WebState, db: AsyncEngine) -> None:
        self.app = app
        self.http = client
        self.web = web
        self.db = db


@pytest.fixture
def open_app() -> Callable[..., Any]:
    import contextlib

    @contextlib.asynccontextmanager
    async def _open(
        settings: Settings,
        client_ip: str = "203.0.113.7",
        before_start: Callable[[FastAPI], None] | None = None,
    ) -> AsyncIterator[AppClient]:
        app = create_app(settings)
        if before_start is not None:
            before_start(app)
        db = create_engine(settings.database_url)
        try:
            async with app.router.lifespan_context(app) as state:
                lifespan_state = dict(state or {})

                async def with_state(scope: Any, receive: Any, send: Any) -> None:
                    # What an ASGI server does with lifespan state: a shallow copy per request.
                    scope["state"] = dict(lifespan_state)
                    await app(scope, receive, send)

                transport = httpx.ASGITransport(app=with_state, client=(client_ip, 40000))
                async with httpx.AsyncClient(transport=transport, base_url="http://otp.test") as http:
                    yield AppClient(app, http, lifespan_state[STATE_KEY], db)
        finally:
            await db.dispose()

    return _open


@pytest.fixture
async def client(open_app: Callable[..., Any], settings: Settings) -> AsyncIterator[AppClient]:
    async with open_app(settings) as app_client:
        yield app_client


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway 3-master Redis Cluster (redis-server --cluster-enabled, redis-cli --cluster create)."""
    import shutil
    import socket
    import subprocess
    import time

    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server and redis-cli are needed for the cluster tests")
    base = tmp_path_factory.mktemp("cluster")

    def stop(procs: list["subprocess.Popen[bytes]"]) -> None:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)

    def start(attempt: int) -> tuple[list[int], list["subprocess.Popen[bytes]"]]:
        ports = []
        for _ in range(3):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                ports.append(int(s.getsockname()[1]))
        # The cluster bus listens on port + 10000: pick ports whose bus port is free too.
        ports = [p if p < 55000 else p - 20000 for p in ports]
        procs = []
        for port in ports:
            workdir = base / f"{attempt}-{port}"
            workdir.mkdir()
            procs.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no"],
                cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        try:
            for port in ports:
                for _ in range(100):
                    pong = subprocess.run(
                        ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True
                    )
                    if pong.stdout.strip() == "PONG":
                        break
                    time.sleep(0.05)
            subprocess.run(
                ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-replicas",
                 "0", "--cluster-yes"],
                capture_output=True, text=True, check=True, timeout=60,
            )  # fmt: skip
            for _ in range(200):
                info = subprocess.run(
                    ["redis-cli", "-p", str(ports[0]), "cluster", "info"], capture_output=True, text=True
                ).stdout
                if "cluster_state:ok" in info:
                    return ports, procs
                time.sleep(0.05)
            raise RuntimeError("the cluster did not become ready")
        except BaseException:
            stop(procs)
            raise

    # A port picked free can be taken (or its bus port busy) by the time redis-server binds it:
    # a few attempts, each on fresh ports.
    for attempt in range(3):
        try:
            ports, procs = start(attempt)
            break
        except (subprocess.CalledProcessError, RuntimeError):
            if attempt == 2:
                raise
    try:
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        stop(procs)


@pytest.fixture(params=[{}, {"redis_url": None}], ids=["redis", "embedded"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> dict[str, Any]:
    """Settings overrides for each store a test runs on: Redis and PostgreSQL (none), and the
    embedded default with a database of its own. A test file may define its own `store`."""
    chosen = dict(request.param)
    if chosen:
        chosen["database_url"] = f"sqlite+aiosqlite:///{tmp_path / 'otp.db'}"
    return chosen


@pytest.fixture
async def provider() -> AsyncIterator[ProviderFake]:
    """Resend's API on loopback (tests/support.ProviderFake). A test file may define its own."""
    async with ProviderFake() as fake:
        yield fake

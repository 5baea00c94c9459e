"""Redis Sentinel, real: three sentinels (`redis-server <conf> --sentinel`, as the Redis
documentation sets them up, quorum 2) watching a primary and its replica (the replica behind a
2 ms replication link, tests/test_redis_failover.py's). The service finds the primary through
them (OTP_REDIS_SENTINELS, OTP_REDIS_SENTINEL_MASTER), follows a failover by itself, and with
OTP_REDIS_MIN_REPLICAS=1 loses no accepted send to it; a demoted primary's READONLY drops the
connection, and the next call goes to the primary of now."""

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from otp_service.redisio import PipelinedRedis, ReplyError, Sentinels
from otp_service.settings import Settings
from tests.redis_servers import redis_server
from tests.support import free_port
from tests.test_redis_failover import (
    Replicated,
    delivered,
    replicated,
    send_traffic,
    settings_on,
)

MASTER = "otpmaster"


class SentinelSet:
    def __init__(self, ports: list[int]) -> None:
        self.ports = ports

    @property
    def setting(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", port) for port in self.ports]

    def ask(self, port: int, *args: str) -> str:
        run = subprocess.run(
            ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10
        )
        return run.stdout.strip()

    def primary_port(self) -> int | None:
        answer = self.ask(self.ports[0], "SENTINEL", "get-master-addr-by-name", MASTER).split()
        return int(answer[1]) if len(answer) == 2 else None

    async def wait_until(self, ready: Callable[[], bool], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert time.monotonic() < deadline, f"the sentinels never {what}"
            await asyncio.sleep(0.1)


@contextlib.contextmanager
def sentinels(workdir: Path, primary_port: int) -> Iterator[SentinelSet]:
    """Three sentinels, quorum 2; a primary is down after 300 ms without an answer."""
    procs: list[subprocess.Popen[bytes]] = []
    ports = [free_port() for _ in range(3)]
    try:
        for port in ports:
            conf = workdir / f"sentinel-{port}.conf"  # a sentinel rewrites its file: one each
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 300\n"
                f"sentinel failover-timeout {MASTER} 5000\n"
            )
            procs.append(
                subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL)
            )
        yield SentinelSet(ports)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.asynccontextmanager
async def watched(tmp_path: Path) -> AsyncIterator[tuple[Replicated, SentinelSet]]:
    """A replicated pair, and three sentinels that know it and each other (so that a failover
    can be agreed on at once)."""
    async with replicated(tmp_path) as pair:
        with sentinels(tmp_path, pair.primary.port) as watching:

            def ready() -> bool:
                for port in watching.ports:
                    peers = watching.ask(port, "SENTINEL", "sentinels", MASTER).count("runid")
                    replicas = watching.ask(port, "SENTINEL", "replicas", MASTER)
                    if peers < 2 or str(pair.replica.port) not in replicas:
                        return False
                return True

            await watching.wait_until(ready, "found each other and the replica")
            yield pair, watching


async def test_the_service_follows_a_sentinel_failover_and_loses_no_accepted_send(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    async with watched(tmp_path) as (pair, watching):
        # OTP_REDIS_URL names no server that runs: the sentinels say where the primary is.
        at_sentinels = {"redis_sentinels": watching.setting, "redis_sentinel_master": MASTER}
        url = f"redis://127.0.0.1:{free_port()}/0"
        settings = settings_on(make_settings, url, redis_min_replicas=1, **at_sentinels)
        accepted: list[str] = []
        async with open_app(settings) as app:
            stop = asyncio.Event()
            sending = asyncio.ensure_future(send_traffic(app, accepted, stop))
            async with asyncio.timeout(30):
                while len(accepted) < 100:
                    await asyncio.sleep(0.005)
            await pair.link.cut()  # the primary dies, with what its link held
            pair.primary.kill()
            killed_at = len(accepted)
            await watching.wait_until(lambda: watching.primary_port() == pair.replica.port, "failed over")
            # The new primary has no replica yet: every send is refused (503), none accepted.
            await asyncio.sleep(0.5)
            assert len(accepted) == killed_at
            # A replica again (the old host back, as Sentinel would reconfigure it). The same
            # service process, not restarted: its sends are accepted again, on the new primary.
            pair.primary.args = (*pair.primary.args, "--replicaof", "127.0.0.1", str(pair.replica.port))
            pair.primary.start()
            async with asyncio.timeout(20):
                while len(accepted) < killed_at + 50:
                    await asyncio.sleep(0.01)
            stop.set()
            await sending
        assert "role:master" in pair.replica.cli("INFO", "replication")
        sent = await delivered(settings_on(make_settings, url, **at_sentinels), capsys)
    lost = set(accepted) - set(sent)
    assert not lost, f"{len(lost)} of {len(accepted)} accepted sends lost"
    assert max(sent.values()) == 1


async def test_a_demoted_primary_is_left_for_the_one_the_sentinels_name(tmp_path: Path) -> None:
    """SENTINEL FAILOVER with both servers up, the old primary then a replica: a write on it is
    refused (READONLY, a 503 in the service) and the next one is on the new primary."""
    async with watched(tmp_path) as (pair, watching):
        client = PipelinedRedis.from_url(
            "redis://127.0.0.1:1/0", timeout=2, sentinels=Sentinels(watching.addresses, MASTER, timeout=1)
        )
        try:
            assert await client.execute("SET", "k", "before") == b"OK"
            assert pair.primary.cli("GET", "k") == "before"
            watching.ask(watching.ports[0], "SENTINEL", "FAILOVER", MASTER)
            await watching.wait_until(lambda: watching.primary_port() == pair.replica.port, "failed over")
            # Sentinel demotes the old primary some seconds after the switch (8 s in Redis 7.0's
            # sentinel.c); until then it still takes writes, which OTP_REDIS_MIN_REPLICAS stops
            # the service answering for (its replica left it). Demoted now, as Sentinel would:
            pair.primary.cli("REPLICAOF", "127.0.0.1", str(pair.replica.port))
            async with asyncio.timeout(20):
                while True:
                    try:
                        await client.execute("SET", "k", "after")
                        break
                    except ReplyError as exc:
                        refused = str(exc)
                    except ConnectionError:
                        refused = "READONLY (or the connection lost)"
                    assert refused.startswith("READONLY"), refused
                    await asyncio.sleep(0.05)
            assert pair.replica.cli("GET", "k") == "after"
            assert "role:master" in pair.replica.cli("INFO", "replication")
        finally:
            await client.aclose()


async def test_readonly_drops_the_connection(tmp_path: Path) -> None:
    """A primary demoted under a live connection (no sentinel involved): READONLY, and the next
    call is on a connection of its own (which, with sentinels, asks them again)."""
    with redis_server(tmp_path / "a") as a, redis_server(tmp_path / "b") as b:
        client = PipelinedRedis.from_url(a.url, timeout=2)
        try:
            first = await client.execute("CLIENT", "ID")
            a.cli("REPLICAOF", "127.0.0.1", str(b.port))
            with pytest.raises(ReplyError, match=r"^READONLY"):
                await client.execute("SET", "k", "v")
            assert await client.execute("CLIENT", "ID") != first
        finally:
            await client.aclose()


async def test_a_server_that_is_not_the_primary_is_refused(tmp_path: Path) -> None:
    """The sentinels name a server that says it is a replica (they have not seen a failover
    yet): no command is sent to it."""
    async with watched(tmp_path) as (pair, watching):
        pair.primary.cli("REPLICAOF", "127.0.0.1", str(pair.replica.port))  # behind their back
        client = PipelinedRedis.from_url(
            "redis://127.0.0.1:1/0", timeout=2, sentinels=Sentinels(watching.addresses, MASTER, timeout=1)
        )
        try:
            with pytest.raises(ConnectionError, match="not the primary"):
                await client.execute("SET", "k", "v")
        finally:
            await client.aclose()


def test_sentinel_settings_are_checked(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ValueError, match="set together"):
        make_settings(redis_sentinels=["127.0.0.1:26379"])
    with pytest.raises(ValueError, match="needs OTP_REDIS_URL"):
        make_settings(redis_url=None, redis_sentinels=["127.0.0.1:26379"], redis_sentinel_master="m")
    with pytest.raises(ValueError, match="each sentinel must be like") as refused:
        make_settings(redis_sentinels=["secret-host:notaport"], redis_sentinel_master="m")
    assert "secret-host" not in str(refused.value)
    settings = make_settings(redis_sentinels=["10.0.0.5:26380", "s2"], redis_sentinel_master="m")
    assert settings.sentinel_addresses() == [("10.0.0.5", 26380), ("s2", 26379)]

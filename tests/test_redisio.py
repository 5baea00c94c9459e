"""The service's one Redis client (redisio.PipelinedRedis), against real Redis, directly and
through a proxy that cuts or stalls it."""

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as redis_asyncio

from otp_service.redisio import PipelinedRedis, ReplyError, evalsha, key_slot
from tests.conftest import REDIS_HOST, REDIS_PORT, REDIS_URL
from tests.support import Proxy


@pytest.fixture
async def client() -> AsyncIterator[PipelinedRedis]:
    c = PipelinedRedis.from_url(REDIS_URL, timeout=1.5)
    yield c
    await c.aclose()


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    p = Proxy(REDIS_HOST, REDIS_PORT, count_redis_commands=True)
    await p.start()
    yield p
    p.resume()
    await p.cut()


async def test_thousands_of_concurrent_calls_each_get_their_own_reply(client: PipelinedRedis) -> None:
    replies = await asyncio.gather(*(client.execute("ECHO", f"call-{i}") for i in range(3000)))
    assert replies == [f"call-{i}".encode() for i in range(3000)]


async def test_error_replies_raise_for_their_caller_only(client: PipelinedRedis, key_prefix: str) -> None:
    key = f"{key_prefix}:not-a-number"
    await client.execute("SET", key, "abc")
    try:
        calls = [client.execute("INCR", key) if i % 3 == 0 else client.execute("ECHO", i) for i in range(300)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        for i, result in enumerate(results):
            if i % 3 == 0:
                assert isinstance(result, ReplyError)
                assert "not an integer" in str(result)
            else:
                assert result == str(i).encode()
    finally:
        await client.execute("DEL", key)


async def test_a_script_redis_does_not_know_is_loaded_by_eval(client: PipelinedRedis) -> None:
    source = f"-- {secrets.token_hex(8)}\nreturn {{ARGV[1], KEYS[1]}}"
    import hashlib

    sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324
    assert await client.execute("SCRIPT", "EXISTS", sha) == [0]
    assert await evalsha(client, sha, source, ["k"], [7]) == [b"7", b"k"]
    assert await client.execute("SCRIPT", "EXISTS", sha) == [1]
    assert await evalsha(client, sha, source, ["k2"], [8]) == [b"8", b"k2"]


async def test_a_burst_on_a_new_client_opens_one_connection(proxy: Proxy) -> None:
    c = PipelinedRedis.from_url(proxy.url, timeout=1.5)
    try:
        assert await asyncio.gather(*(c.execute("PING") for _ in range(100))) == [b"PONG"] * 100
        assert len(proxy._conns) == 2  # one client side, one upstream side
        assert proxy.commands == 100
    finally:
        await c.aclose()


async def test_a_cut_connection_fails_pending_calls_and_the_next_call_reconnects(proxy: Proxy) -> None:
    c = PipelinedRedis.from_url(proxy.url, timeout=1.5)
    try:
        assert await c.execute("PING") == b"PONG"
        proxy.stall()
        pending = [asyncio.ensure_future(c.execute("ECHO", i)) for i in range(20)]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await proxy.cut()
        results = await asyncio.gather(*pending, return_exceptions=True)
        assert time.monotonic() - started < 0.5
        assert all(isinstance(r, ConnectionError) for r in results), results
        with pytest.raises(ConnectionRefusedError):  # nothing listening: refused at once
            await c.execute("PING")
        proxy.resume()
        await proxy.start()
        assert await c.execute("PING") == b"PONG"
    finally:
        await c.aclose()


async def test_a_server_that_stops_answering_fails_calls_within_the_timeout(proxy: Proxy) -> None:
    c = PipelinedRedis.from_url(proxy.url, timeout=0.5)
    try:
        assert await c.execute("PING") == b"PONG"
        proxy.stall()
        started = time.monotonic()
        results = await asyncio.gather(*(c.execute("ECHO", i) for i in range(10)), return_exceptions=True)
        elapsed = time.monotonic() - started
        assert all(isinstance(r, TimeoutError) for r in results), results
        assert 0.5 <= elapsed < 0.8
        proxy.resume()
        assert await c.execute("ECHO", "after") == b"after"  # a new connection, not a stale reply
    finally:
        await c.aclose()


async def test_a_cancelled_call_does_not_shift_the_replies_of_later_calls(proxy: Proxy) -> None:
    c = PipelinedRedis.from_url(proxy.url, timeout=1.5)
    try:
        await c.execute("PING")
        proxy.stall()
        first = asyncio.ensure_future(c.execute("ECHO", "first"))
        await asyncio.sleep(0.05)
        first.cancel()
        second = asyncio.ensure_future(c.execute("ECHO", "second"))
        await asyncio.sleep(0.05)
        proxy.resume()
        assert await second == b"second"
        assert first.cancelled()
    finally:
        await c.aclose()


async def test_credentials_and_database_from_the_url(key_prefix: str) -> None:
    admin = redis_asyncio.Redis(host=REDIS_HOST, port=REDIS_PORT)
    acl = PipelinedRedis.from_url(REDIS_URL, timeout=1.5)
    user, password = f"{key_prefix}-user", secrets.token_hex(8)
    await acl.execute("ACL", "SETUSER", user, "on", f">{password}", "~*", "+@all")
    key = f"{key_prefix}:db"
    c = PipelinedRedis.from_url(f"redis://{user}:{password}@{REDIS_HOST}:{REDIS_PORT}/9", timeout=1.5)
    wrong = PipelinedRedis.from_url(f"redis://{user}:nope@{REDIS_HOST}:{REDIS_PORT}/0", timeout=1.5)
    try:
        assert await c.execute("SET", key, "in-nine") == b"OK"
        assert await c.execute("ACL", "WHOAMI") == user.encode()
        assert await admin.get(key) is None
        admin9 = redis_asyncio.Redis(host=REDIS_HOST, port=REDIS_PORT, db=9)
        assert await admin9.get(key) == b"in-nine"
        await admin9.delete(key)
        await admin9.aclose()
        with pytest.raises(ReplyError, match="WRONGPASS"):
            await wrong.execute("PING")
    finally:
        await c.aclose()
        await wrong.aclose()
        await acl.execute("ACL", "DELUSER", user)
        await acl.aclose()
        await admin.aclose()


async def test_a_blocking_read_may_outlast_the_timeout_by_its_block_time(
    client: PipelinedRedis, key_prefix: str
) -> None:
    c = PipelinedRedis.from_url(REDIS_URL, timeout=0.3)
    stream = f"{key_prefix}:stream"
    try:
        await c.execute("XGROUP", "CREATE", stream, "g", "0", "MKSTREAM")
        started = time.monotonic()
        reply = await c.execute(
            "XREADGROUP", "GROUP", "g", "c", "BLOCK", 600, "STREAMS", stream, ">", blocks_for=0.6
        )
        assert reply is None
        assert 0.55 <= time.monotonic() - started < 0.9
    finally:
        await c.execute("DEL", stream)
        await c.aclose()


def test_key_slot_is_redis_clusters(redis_cluster_url: str) -> None:
    import subprocess

    port = redis_cluster_url.rsplit(":", 1)[1].split("/")[0]
    for key in ("otp:{otp}:jobs", "plain", "a{b}c", "{}x", "x{}{y}"):
        out = subprocess.run(
            ["redis-cli", "-p", port, "CLUSTER", "KEYSLOT", key], capture_output=True, text=True
        )
        assert key_slot(key) == int(out.stdout.strip()), key


async def test_cluster_client_goes_to_the_slot_owner_and_follows_moved(
    redis_cluster_url: str, key_prefix: str
) -> None:
    key = f"{key_prefix}:{{{key_prefix}}}:k"
    routed = PipelinedRedis.from_url(redis_cluster_url, timeout=2, cluster_key=key)
    seeds = []
    slots = await routed.execute("CLUSTER", "SLOTS")
    for entry in slots:
        seeds.append(int(entry[2][1]))
    try:
        assert await routed.execute("SET", key, "v") == b"OK"
        # A client sent to each node in turn without asking who owns the slot: MOVED is followed.
        for port in seeds:
            direct = PipelinedRedis("127.0.0.1", port, timeout=2)
            try:
                assert await direct.execute("GET", key) == b"v"
            finally:
                await direct.aclose()
    finally:
        await routed.execute("DEL", key)
        await routed.aclose()


async def test_unix_socket_urls(tmp_path: "Path") -> None:
    import shutil
    import subprocess

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is needed (apt-get install redis-server)")
    sock = tmp_path / "redis.sock"
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            if sock.exists():
                break
            await asyncio.sleep(0.05)
        c = PipelinedRedis.from_url(f"unix://{sock}?db=3", timeout=2)
        try:
            assert await c.execute("SET", "k", "v") == b"OK"
            assert await c.execute("CLIENT", "INFO") is not None
            assert b"db=3" in await c.execute("CLIENT", "INFO")
        finally:
            await c.aclose()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_other_url_schemes_are_refused() -> None:
    with pytest.raises(ValueError, match="not a Redis URL"):
        PipelinedRedis.from_url("http://127.0.0.1:6379/0", timeout=1)


def _cli(port: int, *args: str) -> str:
    import subprocess

    return subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True
    ).stdout


async def test_a_slot_migrating_under_load_loses_no_call(redis_cluster_url: str, key_prefix: str) -> None:
    """The service's slot moves to another node while thousands of calls are in flight: keys
    that left answer ASK (followed for that call, with ASKING), then the slot answers MOVED
    (followed, later calls go to the new owner); no call fails and every increment counts."""
    from urllib.parse import urlsplit

    tag = f"{{{key_prefix}}}"
    keys = [f"{key_prefix}:{tag}:n{i}" for i in range(8)]
    slot = key_slot(keys[0])
    seed_port = urlsplit(redis_cluster_url).port
    assert seed_port is not None
    nodes = {}
    for line in _cli(seed_port, "CLUSTER", "NODES").splitlines():
        node_id, address = line.split()[:2]
        nodes[node_id] = int(address.split("@")[0].rsplit(":", 1)[1])
    client = PipelinedRedis.from_url(redis_cluster_url, timeout=5, cluster_key=keys[0])
    owner = next(e for e in await client.execute("CLUSTER", "SLOTS") if e[0] <= slot <= e[1])
    source_port = int(owner[2][1])
    source = next(i for i, p in nodes.items() if p == source_port)
    target = next(i for i, p in nodes.items() if p != source_port)
    target_port = nodes[target]
    rounds, per_round = 30, 100

    async def load() -> int:
        for _ in range(rounds):
            calls = (client.execute("INCR", keys[i % len(keys)]) for i in range(per_round))
            assert all(isinstance(x, int) for x in await asyncio.gather(*calls))
            await asyncio.sleep(0.005)
        return rounds * per_round

    def migrate() -> None:
        _cli(target_port, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source)
        _cli(source_port, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target)
        for key in keys:  # one at a time: between them, the keys that left answer ASK
            _cli(source_port, "MIGRATE", "127.0.0.1", str(target_port), key, "0", "5000")
        # The importing node first, then the one that had it (the cluster spec's order), then the rest.
        for port in sorted(nodes.values(), key=lambda p: (p != target_port, p != source_port)):
            _cli(port, "CLUSTER", "SETSLOT", str(slot), "NODE", target)

    try:
        task = asyncio.create_task(load())
        await asyncio.sleep(0.02)
        await asyncio.to_thread(migrate)
        total = await task
        counts = [int(await client.execute("GET", key) or 0) for key in keys]
        assert sum(counts) == total
        owner = next(e for e in await client.execute("CLUSTER", "SLOTS") if e[0] <= slot <= e[1])
        assert int(owner[2][1]) == target_port
    finally:
        for key in keys:
            await client.execute("DEL", key)
        await client.aclose()

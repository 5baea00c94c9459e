"""Redis failover, with redis-server processes of the test's own: a primary, and a replica that
follows it through a replication link delayed a few milliseconds each way (support.DelayedLink).
Eight clients send; the primary is SIGKILLed mid-traffic (its link cut with it, so what it had not
yet passed on is gone); the replica is promoted and the delivery worker drains on it.

With OTP_REDIS_MIN_REPLICAS=1 every send answered 202 is emailed, run after run. Without it, a
send the replica had not yet received when the primary died is lost (a stalled link shows it
every time; a 2 ms one, now and then: the README's figures). A replica that stops acknowledging
turns sends and verifies into 503s with Retry-After, never a 500 nor a hang, and 202s again as
soon as it returns; a send retried with its Idempotency-Key answers what the first write decided.
tests/test_sentinel.py runs the failover with Sentinel doing the promotion."""

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from otp_service.assembly import WorkerOptions, open_infrastructure, running_worker
from otp_service.redisio import NotReplicated, PipelinedRedis, RedisKeys, ReplicaWait, open_redis
from otp_service.settings import Settings
from tests.redis_servers import RedisServer, redis_server
from tests.support import DelayedLink, console_emails, unique_email

SEND = "/api/v1/auth/otp/send"
VERIFY = "/api/v1/auth/otp/verify"
WIDE = {"otp_send": "100000/minute", "otp_verify": "100000/minute", "otp_send_subnet": "100000/minute",
        "otp_verify_subnet": "100000/minute"}  # fmt: skip
CLIENTS = 8


@dataclass
class Replicated:
    primary: RedisServer
    replica: RedisServer
    link: DelayedLink


async def linked(replica: RedisServer, timeout: float = 20.0) -> None:
    """Until the replica has synchronised with its primary."""
    deadline = time.monotonic() + timeout
    while "master_link_status:up" not in replica.cli("INFO", "replication"):
        assert time.monotonic() < deadline, "the replica never synchronised"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def replicated(workdir: Path, delay: float = 0.002) -> AsyncIterator[Replicated]:
    """A primary, and a replica of it behind a DelayedLink. Neither keeps anything on disk: what
    a failover keeps is what replication carried (the README's AOF advice is for restarts)."""
    # The initial sync at once (the diskless sync otherwise waits 5 s for more replicas).
    with redis_server(workdir / "primary", "--repl-diskless-sync-delay", "0") as primary:
        link = DelayedLink("127.0.0.1", primary.port, delay=delay)
        await link.start()
        try:
            with redis_server(
                workdir / "replica", "--replicaof", "127.0.0.1", str(link.port),
                "--repl-diskless-sync-delay", "0", start=False,  # it may be a primary in turn
            ) as replica:  # fmt: skip
                replica.start()
                await linked(replica)
                yield Replicated(primary, replica, link)
        finally:
            await link.cut()


def settings_on(make_settings: Callable[..., Settings], url: str, **overrides: Any) -> Settings:
    # send_rate: the worker drains at once (the default paces it at SES's 14 emails/s).
    return make_settings(redis_url=url, conversion_min_sends=1_000_000, throttle_rates=WIDE,
                         dependency_timeout=1, worker_enabled=False, send_rate=10_000,
                         **overrides)  # fmt: skip


async def send_traffic(app: Any, accepted: list[str], stop: asyncio.Event) -> None:
    """CLIENTS clients sending to fresh addresses until `stop`: 202s noted, 503s allowed."""

    async def one_client() -> None:
        while not stop.is_set():
            email = unique_email()
            res = await app.http.post(SEND, json={"email": email})
            if res.status_code == 202:
                accepted.append(email)
            else:
                assert res.status_code == 503, res.text
                assert "retry-after" in res.headers

    await asyncio.gather(*(one_client() for _ in range(CLIENTS)))


async def fail_over_mid_traffic(
    app: Any, pair: Replicated, *, before_kill: int, promote: Callable[[], Any] | None = None
) -> list[str]:
    """Traffic until `before_kill` sends were accepted; the primary and its link die at once;
    the replica is promoted (by hand unless `promote` does it). The accepted addresses."""
    accepted: list[str] = []
    stop = asyncio.Event()
    sending = asyncio.ensure_future(send_traffic(app, accepted, stop))
    async with asyncio.timeout(30):
        while len(accepted) < before_kill:
            await asyncio.sleep(0.005)
            if sending.done():
                sending.result()
    await pair.link.cut()  # what the link held dies with the primary
    pair.primary.kill()
    await asyncio.sleep(0.2)  # requests in flight as it died answer (503) meanwhile
    stop.set()
    async with asyncio.timeout(30):
        await sending
    if promote is None:
        pair.replica.cli("REPLICAOF", "NO", "ONE")
    else:
        await promote()
    return accepted


async def delivered(settings: Settings, capsys: pytest.CaptureFixture[str]) -> Counter[str]:
    """Every email the delivery worker sends from the promoted replica's queue, drained."""
    sent: Counter[str] = Counter()
    async with (
        open_infrastructure(settings) as infra,
        running_worker(infra, WorkerOptions(concurrency=16)),
    ):
        async with asyncio.timeout(60):
            while True:
                await asyncio.sleep(0.1)
                sent.update(e.to for e in console_emails(capsys.readouterr().out))
                stats = await infra.stores.queue.stats()
                if stats.waiting == 0 and stats.pending == 0:
                    break
        await asyncio.sleep(0.3)
    sent.update(e.to for e in console_emails(capsys.readouterr().out))
    return sent


@pytest.mark.parametrize("run", [1, 2, 3])
async def test_with_min_replicas_no_accepted_send_is_lost_in_a_failover(
    run: int, open_app: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    async with replicated(tmp_path) as pair:
        settings = settings_on(make_settings, pair.primary.url, redis_min_replicas=1)
        async with open_app(settings) as app:
            accepted = await fail_over_mid_traffic(app, pair, before_kill=150)
        sent = await delivered(settings_on(make_settings, pair.replica.url), capsys)
    lost = set(accepted) - set(sent)
    assert not lost, f"{len(lost)} of {len(accepted)} accepted sends lost"
    assert max(sent.values()) == 1
    assert "http.unhandled_error" not in [r.getMessage() for r in caplog.records]


async def test_without_min_replicas_a_failover_loses_what_the_replica_had_not_received(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """What the README says OTP_REDIS_MIN_REPLICAS=0 can lose, made certain: the link stalls (a
    replica falling behind), the primary goes on answering 202, then dies."""
    async with replicated(tmp_path) as pair:
        settings = settings_on(make_settings, pair.primary.url)
        async with open_app(settings) as app:
            before = [unique_email() for _ in range(5)]
            for email in before:
                assert (await app.http.post(SEND, json={"email": email})).status_code == 202
            await asyncio.sleep(0.2)  # replicated
            pair.link.stall()
            behind = [unique_email() for _ in range(5)]
            for email in behind:  # answered 202 all the same
                assert (await app.http.post(SEND, json={"email": email})).status_code == 202
            await pair.link.cut()
            pair.primary.kill()
        pair.replica.cli("REPLICAOF", "NO", "ONE")
        sent = await delivered(settings_on(make_settings, pair.replica.url), capsys)
    assert set(before) <= set(sent)
    assert not set(behind) & set(sent)  # accepted, and never emailed


async def test_a_replica_that_stops_acknowledging_gives_503s_and_recovers(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="otp_service")
    async with replicated(tmp_path) as pair:
        settings = settings_on(make_settings, pair.primary.url, redis_min_replicas=1,
                               redis_replica_timeout=0.2)  # fmt: skip
        async with open_app(settings) as app:
            assert (await app.http.post(SEND, json={"email": unique_email()})).status_code == 202
            pair.link.stall()
            email, key = unique_email(), str(uuid.uuid4())
            started = time.monotonic()
            stalled = await asyncio.gather(
                app.http.post(SEND, json={"email": email}, headers={"idempotency-key": key}),
                *(app.http.post(SEND, json={"email": unique_email()}) for _ in range(10)),
                app.http.post(VERIFY, json={"email": email, "code": "000000"}),
            )
            elapsed = time.monotonic() - started
            for res in stalled:
                assert res.status_code == 503, res.text
                assert res.json()["code"] == "unavailable"
                assert int(res.headers["retry-after"]) >= 1
            assert elapsed < 2.0  # one or two replica timeouts, no hang
            pair.link.resume()
            await asyncio.sleep(0.3)
            # The first write decided a 202 (its code was stored and its job queued): the retry
            # with the same key answers that, and the address gets one email.
            again = await app.http.post(SEND, json={"email": email}, headers={"idempotency-key": key})
            assert again.status_code == 202, again.text
            assert again.headers["idempotent-replayed"] == "true"
            assert (await app.http.post(SEND, json={"email": unique_email()})).status_code == 202
        sent = await delivered(settings, capsys)
    assert sent[email] == 1
    messages = [r.getMessage() for r in caplog.records]
    assert "http.unhandled_error" not in messages
    assert "redis.unavailable" in messages


async def test_concurrent_waits_share_rounds(tmp_path: Path) -> None:
    """Waits that arrive while a round is in flight join the next one: the WAITs do not grow with
    the traffic, and the shared connection never carries one."""
    async with replicated(tmp_path, delay=0.005) as pair:
        client = open_redis(pair.primary.url, RedisKeys("waits"), timeout=2, min_replicas=1)
        try:
            replicas = client.replicas
            assert replicas is not None

            async def write_then_wait(n: int) -> None:
                await client.execute("SET", f"waits:{{waits}}:{n}", n)
                await replicas.wait()

            await asyncio.gather(*(write_then_wait(n) for n in range(200)))
            assert replicas.rounds <= 20
            assert pair.replica.cli("GET", "waits:{waits}:199") == "199"
        finally:
            await client.aclose()


async def test_a_wait_does_not_queue_behind_a_round_in_flight(tmp_path: Path) -> None:
    """A write that comes back while another round is waiting for the replica starts its own
    round at once on another connection: its added latency is one replication round trip, not
    the rest of the earlier round plus its own."""
    async with replicated(tmp_path, delay=0.1) as pair:
        client = open_redis(
            pair.primary.url, RedisKeys("overlap"), timeout=2, min_replicas=1, replica_timeout=2
        )
        try:
            replicas = client.replicas
            assert replicas is not None

            async def write_then_wait(n: int) -> None:
                await client.execute("SET", f"overlap:{{overlap}}:{n}", n)
                await replicas.wait()

            first = asyncio.create_task(write_then_wait(1))
            await asyncio.sleep(0.05)  # the first round is waiting for the replica (>= 0.2 s)
            assert replicas.rounds == 1
            assert not first.done()
            second = asyncio.create_task(write_then_wait(2))
            await asyncio.sleep(0.02)
            assert replicas.rounds == 2
            assert not first.done()
            await asyncio.gather(first, second)
            assert pair.replica.cli("GET", "overlap:{overlap}:2") == "2"
        finally:
            await client.aclose()


async def test_a_wait_times_out_as_not_replicated(tmp_path: Path) -> None:
    with redis_server(tmp_path / "alone") as alone:  # no replica at all
        conn = PipelinedRedis.from_url(alone.url, timeout=2)
        waits = ReplicaWait([conn], "alone:{alone}:mark", replicas=1, timeout=0.05)
        try:
            started = time.monotonic()
            results = await asyncio.gather(*(waits.wait() for _ in range(5)), return_exceptions=True)
            assert all(isinstance(r, NotReplicated) for r in results)
            assert len({id(r) for r in results}) == 5  # each caller's own
            assert time.monotonic() - started < 1
        finally:
            await waits.aclose()


async def test_without_the_setting_nothing_waits(make_settings: Callable[..., Settings]) -> None:
    async with open_infrastructure(make_settings()) as infra:
        assert infra.redis.replicas is None
    with pytest.raises(ValueError, match="OTP_REDIS_MIN_REPLICAS needs a Redis server"):
        make_settings(redis_url=None, redis_min_replicas=1)

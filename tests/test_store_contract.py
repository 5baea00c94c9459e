"""One contract, one implementation: the stores' Lua scripts and stream commands, run on a standalone
Redis (redisio.PipelinedRedis), on a real 3-master Redis Cluster, and on the embedded default's
in-memory Redis (redisio.EmbeddedRedis)."""

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from redis.asyncio import Redis

from otp_service.clock import DAY_MS
from otp_service.delivery.heartbeat import HEARTBEAT_TTL, RedisWorkerRegistry, WorkerRegistry
from otp_service.delivery.queue import JobQueue, RedisJobQueue
from otp_service.delivery.reputation import PauseState, RedisPauseState
from otp_service.limits.throttle import ConversionGuard, Rates, RedisThrottle, Throttle
from otp_service.net import Client, Prefixes, resolve
from otp_service.otp.store import (
    CodeStore,
    RedisCodeStore,
    SendRequest,
    SendStatus,
    VerifyRequest,
    VerifyStatus,
)
from otp_service.redisio import EmbeddedRedis, RedisClient, RedisKeys, open_redis
from otp_service.sends import DeliveryStatus
from otp_service.settings import Rate
from tests.conftest import REDIS_URL
from tests.support import FakeClock

WIDE = Rate(1_000_000, 60)
CLIENT = resolve("198.51.100.1", None, (), Prefixes())
NO_GUARD = ConversionGuard(min_sends=1_000_000, min_ratio=0.0, rate=Rate(1, 3600))


def client(ip: str) -> Client:
    return resolve(ip, None, (), Prefixes())


def pair(per_client: Rate = WIDE, subnet: Rate = WIDE, scope: str = "otp_send", keep_s: int = 0) -> Rates:
    return Rates(scope, per_client, subnet, max(subnet.period_seconds, keep_s) * 1000)


@dataclass
class Env:
    kind: str
    store: CodeStore
    throttle: Throttle
    queue: JobQueue
    pauses: PauseState
    workers: WorkerRegistry
    clock: FakeClock

    async def advance(self, ms: int) -> None:
        """Move the store's clock; Redis key TTLs run on Redis's own clock, so wait for real."""
        self.clock.advance(ms / 1000)
        await asyncio.sleep(ms / 1000)


@pytest.fixture(params=["embedded", "redis", "cluster"])
async def env(request: pytest.FixtureRequest, redis: Redis, key_prefix: str) -> AsyncIterator[Env]:
    """The same cases on the embedded in-memory Redis, on Redis, and on a real 3-master Redis Cluster."""
    clock = FakeClock()
    keys = RedisKeys(key_prefix)
    client: RedisClient
    if request.param == "embedded":
        client = EmbeddedRedis()
    else:
        url = request.getfixturevalue("redis_cluster_url") if request.param == "cluster" else REDIS_URL
        client = open_redis(url, keys, timeout=2, cluster=request.param == "cluster")
    rq = RedisJobQueue(client, keys, clock=clock)
    await rq.ensure_ready()
    yield Env(
        request.param, RedisCodeStore(client, keys, clock=clock), RedisThrottle(client, keys, clock=clock), rq,
        RedisPauseState(client, keys), RedisWorkerRegistry(client, keys, clock=clock), clock,
    )  # fmt: skip
    await rq.aclose()
    if request.param == "cluster":
        # The cluster's nodes are not the test Redis: remove this test's keys from them too.
        await client.execute("EVAL", "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end",
                             0, f"{key_prefix}:*")  # fmt: skip
    await client.aclose()


def send_req(address: str = "addr-1", **overrides: object) -> SendRequest:
    base = SendRequest(
        client=CLIENT,
        address_id=address,
        channel="email",
        rates=pair(),
        guard=NO_GUARD,
        cooldown_ms=60_000,
        daily_limit=10,
        global_limit=50_000,
        code_hash="a" * 64,
        code_ttl_ms=300_000,
        job_payload=b"sealed",
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def verify_req(address: str = "addr-1", code_hash: str = "a" * 64, **overrides: object) -> VerifyRequest:
    base = VerifyRequest(
        client=CLIENT, address_id=address, rates=pair(scope="otp_verify"), code_hash=code_hash, max_attempts=5
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


async def test_first_send_is_accepted_and_enqueued(env: Env) -> None:
    decision = await env.store.decide_send(send_req())
    assert decision.status is SendStatus.OK
    jobs = await env.queue.read("c1", 10, block_ms=10)
    assert [j.id for j in jobs] == [decision.job_id]
    assert jobs[0].payload == b"sealed"
    assert jobs[0].expires_at_ms == int(env.clock() * 1000) + 300_000


async def test_second_send_within_cooldown_is_rejected(env: Env) -> None:
    assert (await env.store.decide_send(send_req())).status is SendStatus.OK
    second = await env.store.decide_send(send_req())
    assert second.status is SendStatus.COOLDOWN
    assert 59_000 < second.retry_after_ms <= 60_000
    assert len(await env.queue.read("c1", 10, block_ms=10)) == 1


async def test_send_after_cooldown_is_accepted(env: Env) -> None:
    assert (await env.store.decide_send(send_req(cooldown_ms=200))).status is SendStatus.OK
    await env.advance(250)
    assert (await env.store.decide_send(send_req(cooldown_ms=200))).status is SendStatus.OK


async def test_daily_cap_is_a_rolling_24_hours(env: Env) -> None:
    for _ in range(3):
        assert (await env.store.decide_send(send_req(cooldown_ms=0, daily_limit=3))).status is SendStatus.OK
        env.clock.advance(3600)
    refused = await env.store.decide_send(send_req(cooldown_ms=0, daily_limit=3))
    assert refused.status is SendStatus.DAILY_LIMIT
    # The first send was 3 h ago: a slot frees 21 h from now.
    assert refused.retry_after_ms == DAY_MS - 3 * 3_600_000
    env.clock.advance(21 * 3600)
    assert (await env.store.decide_send(send_req(cooldown_ms=0, daily_limit=3))).status is SendStatus.OK


async def test_global_cap_counts_accepted_sends_across_addresses(env: Env) -> None:
    statuses = [(await env.store.decide_send(send_req(f"addr-{i}", global_limit=3))).status for i in range(5)]
    assert statuses == [SendStatus.OK] * 3 + [SendStatus.GLOBAL_LIMIT] * 2
    assert await env.store.global_usage("email") == 3


async def test_global_cap_rejection_does_not_start_a_cooldown(env: Env) -> None:
    assert (await env.store.decide_send(send_req("a", global_limit=1))).status is SendStatus.OK
    assert (await env.store.decide_send(send_req("b", global_limit=1))).status is SendStatus.GLOBAL_LIMIT
    # Capacity returns (a higher cap): "b" was never charged a cooldown or a daily slot.
    assert (await env.store.decide_send(send_req("b", global_limit=2))).status is SendStatus.OK
    assert (await env.store.decide_send(send_req("b", global_limit=9))).status is SendStatus.COOLDOWN


async def test_ip_throttle_counts_every_request_and_rejects_over_the_rate(env: Env) -> None:
    rate = Rate(3, 60)
    statuses = [
        (await env.store.decide_send(send_req(f"addr-{i}", rates=pair(rate)))).status for i in range(3)
    ]
    assert statuses == [SendStatus.OK] * 3
    refused = await env.store.decide_send(send_req("addr-9", rates=pair(rate)))
    assert refused.status is SendStatus.RATE_LIMITED
    assert 0 < refused.retry_after_ms <= 60_000
    # Another client is not affected.
    assert (
        await env.store.decide_send(send_req("addr-9", rates=pair(rate), client=client("192.0.2.9")))
    ).status is (SendStatus.OK)


async def test_cooldown_rejections_still_count_against_the_ip(env: Env) -> None:
    rate = Rate(2, 60)
    assert (await env.store.decide_send(send_req(rates=pair(rate)))).status is SendStatus.OK
    assert (await env.store.decide_send(send_req(rates=pair(rate)))).status is SendStatus.COOLDOWN
    assert (
        await env.store.decide_send(send_req("other", rates=pair(rate)))
    ).status is SendStatus.RATE_LIMITED


async def test_throttle_alone_admits_then_refuses(env: Env) -> None:
    rate = Rate(2, 60)
    waits = [await env.throttle.hit(pair(rate), client("192.0.2.1")) for _ in range(3)]
    assert waits[:2] == [0, 0]
    assert 0 < waits[2] <= 60_000
    env.clock.advance(61)
    assert await env.throttle.hit(pair(rate), client("192.0.2.1")) == 0


async def test_clients_of_one_subnet_share_its_budget(env: Env) -> None:
    rates = pair(Rate(2, 60), Rate(5, 60))
    admitted = []
    for i in range(8):  # four clients of one /24, two requests each
        decision = await env.store.decide_send(
            send_req(f"s-{i}", rates=rates, client=client(f"203.0.113.{i // 2}"))
        )
        admitted.append(decision.status is SendStatus.OK)
    assert admitted == [True] * 5 + [False] * 3
    refused = await env.store.decide_send(send_req("s-9", rates=rates, client=client("203.0.113.200")))
    assert refused.status is SendStatus.RATE_LIMITED
    assert 0 < refused.retry_after_ms <= 60_000
    # The next /24 has a budget of its own.
    other = await env.store.decide_send(send_req("s-10", rates=rates, client=client("203.0.114.1")))
    assert other.status is SendStatus.OK
    # Refused requests were not recorded: a minute after the first five, the subnet admits again.
    env.clock.advance(61)
    again = await env.store.decide_send(send_req("s-11", rates=rates, client=client("203.0.113.7")))
    assert again.status is SendStatus.OK


async def test_an_ipv6_client_is_its_64_and_its_subnet_its_48(env: Env) -> None:
    rates = pair(Rate(2, 60), Rate(3, 60))
    a, b = client("2001:db8:1:1::1"), client("2001:db8:1:1:ffff::9")  # one /64
    assert a.key == b.key == "2001:db8:1:1::/64"
    statuses = [(await env.store.decide_send(send_req(f"v6-{i}", rates=rates, client=c))).status
                for i, c in enumerate([a, b, a])]  # fmt: skip
    assert statuses == [SendStatus.OK, SendStatus.OK, SendStatus.RATE_LIMITED]
    # Another /64 of the same /48 takes the subnet's last slot; then the /48 is full.
    c, d = client("2001:db8:1:2::1"), client("2001:db8:1:3::1")
    assert (await env.store.decide_send(send_req("v6-3", rates=rates, client=c))).status is SendStatus.OK
    assert (
        await env.store.decide_send(send_req("v6-4", rates=rates, client=d))
    ).status is SendStatus.RATE_LIMITED
    assert (
        await env.store.decide_send(send_req("v6-5", rates=rates, client=client("2001:db8:2::1")))
    ).status is (SendStatus.OK)


async def test_concurrent_sends_from_one_subnet_accept_exactly_its_budget(env: Env) -> None:
    rates = pair(Rate(1000, 60), Rate(30, 60))
    results = await asyncio.gather(
        *(env.store.decide_send(send_req(f"c-{i}", rates=rates, client=client(f"198.51.100.{i % 250}")))
          for i in range(300))
    )  # fmt: skip
    assert sum(r.status is SendStatus.OK for r in results) == 30
    assert len(await env.queue.read("c1", 1000, block_ms=10)) == 30


GUARD = ConversionGuard(min_sends=20, min_ratio=0.1, rate=Rate(6, 3600))


async def test_a_subnet_whose_codes_are_not_verified_is_slowed_until_its_ratio_recovers(env: Env) -> None:
    rates = pair(keep_s=3600)
    sender = client("192.0.2.10")

    async def send(name: str) -> object:
        return await env.store.decide_send(send_req(name, rates=rates, guard=GUARD, client=sender))

    for i in range(20):
        assert (await send(f"g-{i}")).status is SendStatus.OK  # type: ignore[attr-defined]
    # 20 sends, none verified: the guard counts the subnet's requests of the last hour (20 >= 6).
    slowed = await send("g-20")
    assert (slowed.status, slowed.slowed) == (SendStatus.RATE_LIMITED, True)  # type: ignore[attr-defined]
    assert 0 < slowed.retry_after_ms <= 3_600_000  # type: ignore[attr-defined]
    again = await send("g-21")
    assert (again.status, again.slowed) == (SendStatus.RATE_LIMITED, False)  # type: ignore[attr-defined]
    # Another subnet is not slowed.
    other = await env.store.decide_send(send_req("g-x", rates=rates, guard=GUARD, client=client("192.0.3.1")))
    assert other.status is SendStatus.OK
    # Two codes verified (2/20 = 0.1, not below the ratio): the subnet sends again.
    for i in range(2):
        verified = await env.store.verify(
            verify_req(f"g-{i}", rates=pair(scope="otp_verify"), client=client("192.0.2.99"))
        )
        assert verified.status is VerifyStatus.APPROVED
    assert (await send("g-22")).status is SendStatus.OK  # type: ignore[attr-defined]


async def test_the_slowed_subnet_gets_the_guard_rate_once_its_hour_has_passed(env: Env) -> None:
    rates = pair(keep_s=3600)
    sender = client("192.0.2.10")
    for i in range(20):
        status = (
            await env.store.decide_send(send_req(f"h-{i}", rates=rates, guard=GUARD, client=sender))
        ).status
        assert status is SendStatus.OK
    env.clock.advance(3601)  # still 20 sends in 24 h, none in the guard's hour
    statuses = [
        (await env.store.decide_send(send_req(f"h2-{i}", rates=rates, guard=GUARD, client=sender))).status
        for i in range(8)
    ]
    assert statuses == [SendStatus.OK] * 6 + [SendStatus.RATE_LIMITED] * 2


async def test_right_code_verifies_once(env: Env) -> None:
    await env.store.decide_send(send_req())
    assert (await env.store.verify(verify_req())).status is VerifyStatus.APPROVED
    assert (await env.store.verify(verify_req())).status is VerifyStatus.EXPIRED


async def test_wrong_codes_count_down_then_invalidate(env: Env) -> None:
    await env.store.decide_send(send_req())
    remaining = []
    for _ in range(4):
        d = await env.store.verify(verify_req(code_hash="b" * 64))
        assert d.status is VerifyStatus.INVALID
        remaining.append(d.attempts_remaining)
    assert remaining == [4, 3, 2, 1]
    assert (await env.store.verify(verify_req(code_hash="b" * 64))).status is VerifyStatus.MAX_ATTEMPTS
    # Invalidated: even the right code no longer works.
    assert (await env.store.verify(verify_req())).status is VerifyStatus.EXPIRED


async def test_never_sent_is_expired(env: Env) -> None:
    assert (await env.store.verify(verify_req("nobody"))).status is VerifyStatus.EXPIRED


async def test_new_code_replaces_the_previous_and_resets_attempts(env: Env) -> None:
    await env.store.decide_send(send_req(cooldown_ms=0))
    for _ in range(4):
        await env.store.verify(verify_req(code_hash="b" * 64))
    await env.store.decide_send(send_req(cooldown_ms=0, code_hash="c" * 64))
    assert (await env.store.verify(verify_req())).status is VerifyStatus.INVALID
    assert (await env.store.verify(verify_req(code_hash="b" * 64))).attempts_remaining == 3
    assert (await env.store.verify(verify_req(code_hash="c" * 64))).status is VerifyStatus.APPROVED


async def test_a_new_code_supersedes_the_send_that_emailed_the_previous_one(env: Env) -> None:
    """The code names the send that emailed it: a newer code moves that send to superseded
    (from sent or delivered as from queued; a final status stays), and an approved verify
    answers it. A used code's send is not superseded by the next send: nothing replaced it. Under
    reuse, the send that emails the live code again is the one the code names, and the earlier
    stays as it was (its code still stands)."""

    async def send(send_id: str, code_hash: str, reuse: bool = False) -> None:
        req = send_req(
            cooldown_ms=0, send_id=send_id, code_hash=code_hash, status_keep_ms=3_900_000, reuse=reuse
        )
        assert (await env.store.decide_send(req)).status is SendStatus.OK

    async def status(send_id: str) -> DeliveryStatus:
        state = await env.store.send_status(send_id)
        assert state is not None
        return state.status

    await send("send-1", "a" * 64)
    assert await env.store.mark_send("send-1", DeliveryStatus.DELIVERED)
    await send("send-2", "b" * 64)
    assert (await status("send-1"), await status("send-2")) == (
        DeliveryStatus.SUPERSEDED,
        DeliveryStatus.QUEUED,
    )
    assert await env.store.mark_send("send-2", DeliveryStatus.FAILED)
    await send("send-3", "c" * 64)
    assert await status("send-2") is DeliveryStatus.FAILED  # final: never moves
    approved = await env.store.verify(verify_req(code_hash="c" * 64))
    assert (approved.status, approved.send_id) == (VerifyStatus.APPROVED, "send-3")
    await send("send-4", "d" * 64, reuse=True)
    assert await status("send-3") is DeliveryStatus.QUEUED
    await send("send-5", "e" * 64, reuse=True)  # the live code "d" is emailed again
    assert await status("send-4") is DeliveryStatus.QUEUED
    approved = await env.store.verify(verify_req(code_hash="d" * 64))
    assert (approved.status, approved.send_id) == (VerifyStatus.APPROVED, "send-5")


async def test_wrong_attempts_never_extend_the_lifetime(env: Env) -> None:
    await env.store.decide_send(send_req(code_ttl_ms=600))
    for _ in range(3):
        await env.advance(150)
        assert (await env.store.verify(verify_req(code_hash="b" * 64))).status is VerifyStatus.INVALID
    await env.advance(200)  # 650 ms after the send: past the original 600 ms lifetime
    assert (await env.store.verify(verify_req())).status is VerifyStatus.EXPIRED


async def test_verify_ip_throttle(env: Env) -> None:
    rate = Rate(2, 60)
    await env.store.decide_send(send_req())
    for _ in range(2):
        await env.store.verify(verify_req(code_hash="b" * 64, rates=pair(rate, scope="otp_verify")))
    refused = await env.store.verify(verify_req(rates=pair(rate, scope="otp_verify")))
    assert refused.status is VerifyStatus.RATE_LIMITED
    assert refused.retry_after_ms > 0
    # The throttled attempt did not consume the code.
    assert (await env.store.verify(verify_req())).status is VerifyStatus.APPROVED


async def test_concurrent_sends_to_one_address_accept_exactly_one(env: Env) -> None:
    results = await asyncio.gather(*(env.store.decide_send(send_req()) for _ in range(300)))
    assert sum(r.status is SendStatus.OK for r in results) == 1
    assert len(await env.queue.read("c1", 1000, block_ms=10)) == 1


async def test_concurrent_sends_against_global_cap_accept_exactly_the_cap(env: Env) -> None:
    results = await asyncio.gather(
        *(env.store.decide_send(send_req(f"a{i}", global_limit=37)) for i in range(300))
    )
    assert sum(r.status is SendStatus.OK for r in results) == 37
    assert await env.store.global_usage("email") == 37


async def test_concurrent_wrong_guesses_are_counted_exactly(env: Env) -> None:
    await env.store.decide_send(send_req())
    results = await asyncio.gather(
        *(env.store.verify(verify_req(code_hash=secrets.token_hex(32), max_attempts=50)) for _ in range(200))
    )
    statuses = [r.status for r in results]
    assert statuses.count(VerifyStatus.INVALID) == 49
    assert statuses.count(VerifyStatus.MAX_ATTEMPTS) == 1
    assert statuses.count(VerifyStatus.EXPIRED) == 150
    assert sorted(r.attempts_remaining for r in results if r.status is VerifyStatus.INVALID) == list(
        range(1, 50)
    )


# --- the delivery queue --------------------------------------------------------------------


async def test_queue_job_is_read_by_one_consumer_and_gone_after_ack(env: Env) -> None:
    await env.store.decide_send(send_req())
    first = await env.queue.read("c1", 10, block_ms=10)
    assert len(first) == 1
    assert await env.queue.read("c2", 10, block_ms=10) == []
    stats = await env.queue.stats()
    assert (stats.waiting, stats.pending) == (0, 1)
    await env.queue.ack(first[0].id)
    stats = await env.queue.stats()
    assert (stats.waiting, stats.pending) == (0, 0)
    assert await env.queue.reclaim("c2", 0, 10) == []


async def test_queue_reclaims_jobs_of_a_silent_consumer(env: Env) -> None:
    await env.store.decide_send(send_req())
    [job] = await env.queue.read("dead", 10, block_ms=10)
    assert await env.queue.reclaim("alive", 10_000, 10) == []  # not idle long enough yet
    await asyncio.sleep(0.12)
    reclaimed = await env.queue.reclaim("alive", 100, 10)
    assert [j.id for j in reclaimed] == [job.id]
    assert reclaimed[0].payload == job.payload


async def test_queue_touch_keeps_a_live_consumers_claim(env: Env) -> None:
    await env.store.decide_send(send_req())
    [job] = await env.queue.read("busy", 10, block_ms=10)
    await asyncio.sleep(0.08)
    await env.queue.touch("busy", [job.id])
    assert await env.queue.reclaim("other", 60, 10) == []


async def test_queue_read_blocks_until_a_job_arrives(env: Env) -> None:
    reader = asyncio.create_task(env.queue.read("c1", 10, block_ms=2000))
    await asyncio.sleep(0.05)
    assert not reader.done()
    await env.store.decide_send(send_req())
    jobs = await asyncio.wait_for(reader, 2)
    assert len(jobs) == 1


async def test_sending_paused_refuses_without_consuming_anything(env: Env) -> None:
    await env.pauses.pause("ses", "bounce rate")
    await env.pauses.set_sending_paused(True)
    refused = await env.store.decide_send(send_req())
    assert refused.status is SendStatus.PAUSED
    assert refused.retry_after_ms > 0
    assert await env.pauses.pauses() == {"ses": "bounce rate"}
    assert await env.pauses.resume("ses", 1234)
    assert not await env.pauses.resume("ses", 1235)
    assert await env.pauses.resumed_at("ses") == 1235
    assert await env.pauses.pauses() == {}
    # Resuming cleared the flag; nothing (cooldown, daily slot, global slot) was charged before.
    assert (await env.store.decide_send(send_req())).status is SendStatus.OK
    assert await env.store.global_usage("email") == 1


async def test_queue_forgets_consumers_that_hold_nothing_and_read_nothing(env: Env) -> None:
    for address in ("addr-1", "addr-2"):
        assert (await env.store.decide_send(send_req(address))).status is SendStatus.OK
    [done] = await env.queue.read("gone", 1, block_ms=10)
    await env.queue.ack(done.id)
    [held] = await env.queue.read("holding", 1, block_ms=10)  # still pending: must be kept
    await asyncio.sleep(0.3)
    assert await env.queue.read("live", 1, block_ms=10) == []  # reading, even nothing, is being alive
    assert await env.queue.forget_idle_consumers(200) == ["gone"]
    assert await env.queue.forget_idle_consumers(200) == []
    assert [j.id for j in await env.queue.reclaim("other", 0, 10)] == [held.id]


async def test_is_current_follows_the_live_code(env: Env) -> None:
    await env.store.decide_send(send_req(code_hash="a" * 64, cooldown_ms=0))
    assert await env.store.is_current("addr-1", "a" * 64)
    await env.store.decide_send(send_req(code_hash="b" * 64, cooldown_ms=0))
    assert not await env.store.is_current("addr-1", "a" * 64)  # replaced by the newer code
    assert await env.store.is_current("addr-1", "b" * 64)
    assert (await env.store.verify(verify_req(code_hash="b" * 64))).status is VerifyStatus.APPROVED
    assert not await env.store.is_current("addr-1", "b" * 64)  # used
    assert not await env.store.is_current("never-sent", "a" * 64)


async def test_workers_alive_counts_current_heartbeats(env: Env) -> None:
    assert await env.workers.alive() == 0
    await env.workers.beat("w1", {"concurrency": 8})
    await env.workers.beat("w2", {"concurrency": 8})
    await env.workers.beat("w1", {"concurrency": 8})
    assert await env.workers.alive() == 2
    env.clock.advance(HEARTBEAT_TTL + 1)  # both lapse: the count reads the store's clock
    await env.workers.beat("w3", {"concurrency": 8})
    assert await env.workers.alive() == 1


async def test_reuse_re_sends_the_live_code_without_extending_it_or_resetting_attempts(env: Env) -> None:
    """OTP_RESEND_STRATEGY=reuse: the second send queues the first code (as the store sealed it)
    with its time left; the code's hash, lifetime and wrong attempts are untouched."""
    reuse: dict[str, Any] = {"cooldown_ms": 0, "reuse_min_left_ms": 30_000, "reuse": True}
    first = await env.store.decide_send(send_req(code_hash="a" * 64, job_payload=b"sealed-a", **reuse))
    assert first.status is SendStatus.OK
    for remaining in (4, 3):
        assert (await env.store.verify(verify_req(code_hash="b" * 64))).attempts_remaining == remaining
    await env.advance(1000)
    second = await env.store.decide_send(send_req(code_hash="c" * 64, job_payload=b"sealed-job-2", **reuse))
    assert second.status is SendStatus.OK
    job1, job2 = await env.queue.read("c1", 10, block_ms=10)
    assert (job1.reused_code, job1.lifetime_s) == (None, None)
    assert (job2.payload, job2.reused_code) == (b"sealed-job-2", b"sealed-a")
    assert job2.lifetime_s in (298, 299)
    assert abs(job2.expires_at_ms - job1.expires_at_ms) < 200  # not extended
    assert await env.store.is_current("addr-1", "a" * 64)
    assert not await env.store.is_current("addr-1", "c" * 64)
    wrong = await env.store.verify(verify_req(code_hash="c" * 64))  # the new code was never stored
    assert (wrong.status, wrong.attempts_remaining) == (VerifyStatus.INVALID, 2)  # counting went on
    assert (await env.store.verify(verify_req(code_hash="a" * 64))).status is VerifyStatus.APPROVED

    # Used: the next send has no live code to re-send, so it stores its own.
    third = await env.store.decide_send(send_req(code_hash="d" * 64, job_payload=b"sealed-d", **reuse))
    assert third.status is SendStatus.OK
    [job3] = await env.queue.read("c1", 10, block_ms=10)
    assert job3.reused_code is None
    assert await env.store.is_current("addr-1", "d" * 64)


async def test_reuse_replaces_a_code_too_close_to_expiry_and_rotate_always_replaces(env: Env) -> None:
    ok = SendStatus.OK
    assert (
        await env.store.decide_send(
            send_req(code_hash="a" * 64, job_payload=b"s-a", cooldown_ms=0, reuse=True)
        )
    ).status is ok
    nearly_gone = send_req(code_hash="b" * 64, job_payload=b"s-b", cooldown_ms=0, reuse_min_left_ms=400_000,
                           reuse=True)  # fmt: skip
    assert (await env.store.decide_send(nearly_gone)).status is ok
    assert await env.store.is_current("addr-1", "b" * 64)
    assert (await env.store.decide_send(send_req(code_hash="c" * 64, cooldown_ms=0))).status is ok  # rotate
    assert await env.store.is_current("addr-1", "c" * 64)
    jobs = await env.queue.read("c1", 10, block_ms=10)
    assert [j.reused_code for j in jobs] == [None, None, None]

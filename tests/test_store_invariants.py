"""The contract's invariants under random operation sequences, on every store the suite runs
(the embedded in-memory Redis, Redis, Redis Cluster): seeded, so a failure names the seed and
step that reproduce it.

Each sequence drives a few addresses through sends (rotate and reuse, with and without an
Idempotency-Key), verifies (the live code, a wrong one, an old one) and time moving past
cooldowns, lifetimes and the 24 h window, against a model of what the contract promises. After
every step:
- at most one live code per address, and it is the one the model holds (`is_current`);
- a code verifies at most once; wrong attempts never exceed the limit nor extend a lifetime;
- every accepted send queues exactly one email, carrying the address's new code, or with
  `reuse` the live code again with the time it has left;
- cooldowns and the daily cap hold exactly.
"""

import random
from dataclasses import dataclass, field

from otp_service.clock import DAY_MS
from otp_service.otp.store import ClaimStatus, Idempotency, SendDecision, SendStatus, VerifyStatus
from tests.test_store_contract import Env, env, send_req, verify_req

__all__ = ["env"]  # the contract suite's fixture: the same stores

SEQUENCES = {"embedded": 500, "redis": 1000, "cluster": 300}
STEPS = 12
DAILY_LIMIT = 3
MAX_ATTEMPTS = 3
TTL_MS = 300_000
REUSE_MIN_LEFT_MS = 30_000
KEEP_MS = 600_000
ADVANCES_MS = [1_000, 30_000, 61_000, 200_000, 5 * 3_600_000, DAY_MS]


@dataclass
class Code:
    hash: str
    sealed: bytes | None
    expires: int
    wrong: int = 0


@dataclass
class Address:
    id: str
    live: Code | None = None
    cooldown_until: int = 0
    sends: list[int] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)  # every hash ever stored, oldest first
    key: tuple[str, int, SendDecision] | None = None  # its last Idempotency-Key, when, its answer


class Model:
    def __init__(self, env: Env, rng: random.Random, seq: int, cooldown_ms: int) -> None:
        self.env = env
        self.rng = rng
        self.cooldown_ms = cooldown_ms
        self.addresses = [Address(f"inv{seq}-{i}") for i in range(3)]
        self.counter = 0
        self.jobs = 0

    def now(self) -> int:
        return int(self.env.clock() * 1000)

    def fresh(self) -> str:
        self.counter += 1
        return f"{self.counter:064x}"

    def expected_send(self, a: Address, now: int) -> SendStatus:
        if a.live is not None and a.live.expires <= now:
            a.live = None
        if a.cooldown_until > now:
            return SendStatus.COOLDOWN
        if sum(1 for t in a.sends if t > now - DAY_MS) >= DAILY_LIMIT:
            return SendStatus.DAILY_LIMIT
        return SendStatus.OK

    async def send(self, a: Address, step: str) -> None:
        now, reuse = self.now(), self.rng.random() < 0.5
        code_hash = self.fresh()
        sealed = f"sealed-{code_hash[-8:]}".encode() if reuse else None
        repeat = a.key is not None and now - a.key[1] < KEEP_MS and self.rng.random() < 0.3
        key_id = a.key[0] if repeat and a.key else f"key-{a.id}-{self.fresh()[-12:]}"
        idem = Idempotency(key_id, a.id, KEEP_MS, 15_000) if self.rng.random() < 0.4 or repeat else None
        if idem is not None:
            claim = await self.env.store.claim(idem, send_req().client, send_req().rates)
            if claim.status is ClaimStatus.REPLAY:
                assert repeat, step
                assert a.key is not None, step
                kept = a.key[2]
                assert claim.decision is not None, step
                assert claim.decision.replayed, step
                assert (claim.decision.status, claim.decision.job_id) == (kept.status, kept.job_id), step
                return  # a replay changes nothing and queues nothing
            assert claim.status is ClaimStatus.NEW, (step, claim)
        expected = self.expected_send(a, now)
        decision = await self.env.store.decide_send(
            send_req(a.id, cooldown_ms=self.cooldown_ms, daily_limit=DAILY_LIMIT, code_hash=code_hash,
                     code_ttl_ms=TTL_MS, job_payload=sealed or b"sealed", reuse=reuse, reuse_min_left_ms=REUSE_MIN_LEFT_MS,
                     idempotency=idem)
        )  # fmt: skip
        assert decision.status is expected, (step, decision)
        if idem is not None:
            a.key = (key_id, now, decision)
        if expected is SendStatus.COOLDOWN:
            assert decision.retry_after_ms == a.cooldown_until - now, step
            return
        if expected is not SendStatus.OK:
            return
        [job] = await self.env.queue.read("inv", 10, block_ms=100)
        self.jobs += 1
        assert job.id == decision.job_id, step
        live = a.live
        if reuse and live is not None and live.sealed is not None and live.expires - now >= REUSE_MIN_LEFT_MS:
            # The live code again, its lifetime and wrong attempts untouched.
            assert (job.reused_code, job.lifetime_s) == (live.sealed, (live.expires - now) // 1000), step
            assert job.expires_at_ms == live.expires, step
        else:
            assert job.reused_code is None, (step, job)
            assert job.expires_at_ms == now + TTL_MS, step
            a.live = Code(code_hash, sealed, now + TTL_MS)
            a.issued.append(code_hash)
        a.sends.append(now)
        if self.cooldown_ms:
            a.cooldown_until = now + self.cooldown_ms

    async def verify(self, a: Address, step: str) -> None:
        now = self.now()
        if a.live is not None and a.live.expires <= now:
            a.live = None
        choice = self.rng.random()
        if a.live is not None and choice < 0.4:
            candidate = a.live.hash
        elif a.issued and choice < 0.7:
            candidate = self.rng.choice(a.issued)  # an old code, perhaps used or replaced
        else:
            candidate = self.fresh()
        decision = await self.env.store.verify(
            verify_req(a.id, code_hash=candidate, max_attempts=MAX_ATTEMPTS)
        )
        live = a.live
        if live is None:
            assert decision.status is VerifyStatus.EXPIRED, (step, decision)
        elif candidate == live.hash:
            assert decision.status is VerifyStatus.APPROVED, (step, decision)
            a.live = None  # verifies once
        else:
            live.wrong += 1
            if live.wrong >= MAX_ATTEMPTS:
                assert decision.status is VerifyStatus.MAX_ATTEMPTS, (step, decision)
                a.live = None
            else:
                assert decision.status is VerifyStatus.INVALID, (step, decision)
                assert decision.attempts_remaining == MAX_ATTEMPTS - live.wrong, step

    async def check(self, step: str) -> None:
        for a in self.addresses:
            now = self.now()
            live = a.live.hash if a.live is not None and a.live.expires > now else None
            for code_hash in a.issued:
                assert await self.env.store.is_current(a.id, code_hash) is (code_hash == live), (step, a.id)


async def run_sequence(env: Env, seed: int, seq: int) -> int:
    rng = random.Random(seed * 100_003 + seq)
    model = Model(env, rng, seq, cooldown_ms=rng.choice([0, 60_000]))
    for n in range(STEPS):
        a = rng.choice(model.addresses)
        op = rng.random()
        step = f"seed {seed} sequence {seq} step {n}"
        if op < 0.5:
            await model.send(a, f"{step} send {a.id}")
        elif op < 0.8:
            await model.verify(a, f"{step} verify {a.id}")
        else:
            env.clock.advance(rng.choice(ADVANCES_MS) / 1000)
        await model.check(step)
    return model.jobs


async def test_random_sequences_keep_the_contracts_invariants(env: Env) -> None:
    seed = 20261201
    jobs = 0
    for seq in range(SEQUENCES[env.kind]):
        jobs += await run_sequence(env, seed, seq)
        stats = await env.queue.stats()
        # Every job queued is one the model accepted and read: none waiting, none extra.
        assert (stats.waiting, stats.pending) == (0, jobs), f"seed {seed} sequence {seq}"
    assert jobs > SEQUENCES[env.kind]  # the sequences did send

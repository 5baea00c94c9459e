"""The reputation guard (CONTRACT §6): rolling bounce and complaint rates per provider, from our
own records (deliveries sent, and the bounces and complaints matched to them by the provider's
message id), and the blame for them, traced to the client and subnet that requested each send.

A client whose sends drew OTP_REPUTATION_SOURCE_LIMIT bounces + complaints in 24 h is blocked from
sending for 24 h; its subnet only once OTP_REPUTATION_SUBNET_CLIENTS of its clients are blocked
(carrier NAT puts many real users behind one /24). The events of blocked sources count toward no
provider's rates. A provider is paused only on evidence: a rate over its threshold, above the
minimum volume, from enough distinct mailboxes (validation/mailbox.py: the spellings of one inbox
are one) and enough distinct subnets. A paused provider's jobs go to a healthy fallback; with
none left, sends from sources that are not remembered answer 503 `sending_paused`. After
OTP_REPUTATION_COOLOFF the guard resumes a provider whose thresholds hold; an operator may resume
one, or lift a block, at any time (admin API). The pause and block state is shared by every
process through Redis; blocks are indexed there, so listing them needs no SCAN."""

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from otp_service.audit.service import AuditLog
from otp_service.background import Background
from otp_service.clock import Clock, now_ms, system_clock
from otp_service.db.guard import database_guard
from otp_service.delivery import repository as deliveries
from otp_service.errors import NotFound
from otp_service.logs import get_logger, mask_subnet
from otp_service.redisio import RedisClient, RedisKeys, Script, redis_guard, text
from otp_service.settings import Settings
from otp_service.supervise import Loop
from otp_service.validation.mailbox import Mailboxes

log = get_logger("reputation")

DAY = timedelta(days=1)
DAY_MS = int(DAY.total_seconds() * 1000)
"""How long a block lasts, and the window its events are counted in (CONTRACT §6: 24 h)."""


class BlockKind(StrEnum):
    CLIENT = "client"
    SUBNET = "subnet"


def client_cidr(client: str) -> str:
    """A client (net.Client.key) as the CIDR the admin API names it by: an IPv4 address as its
    /32; an IPv6 client is already its prefix (`2001:db8:1:2::/64`)."""
    return client if "/" in client else f"{client}/{128 if ':' in client else 32}"


@dataclass(frozen=True, slots=True)
class Block:
    """One block of the guard's: what GET /api/v1/admin/blocks lists, as the index keeps it."""

    source: str  # the CIDR, as listed and as DELETE takes it
    kind: BlockKind
    key: str  # what the send decision's key names: the client's key, or the subnet
    subnet: str | None  # the subnet it is in (a subnet's own)
    events: int  # bounces + complaints in 24 h that led to it
    since_ms: int
    until_ms: int

    def entry(self) -> str:
        return json.dumps({"kind": self.kind, "key": self.key, "subnet": self.subnet, "events": self.events,
                           "since": self.since_ms, "until": self.until_ms})  # fmt: skip

    @classmethod
    def of(cls, source: str, entry: bytes | str) -> "Block":
        e = json.loads(entry)
        return cls(source, BlockKind(e["kind"]), e["key"], e["subnet"], e["events"], e["since"], e["until"])


class PauseState(Protocol):
    """The guard's shared state: paused providers, and blocked sources."""

    async def pauses(self) -> dict[str, str]:
        """Paused providers and why."""
        ...

    async def pause(self, provider: str, reason: str, at_ms: int = 0) -> None: ...

    async def paused_at(self, provider: str) -> int | None: ...

    async def block(self, block: Block) -> bool:
        """Block a source until `block.until_ms`; True when it was not blocked already."""
        ...

    async def block_source(self, subnet: str, ms: int, events: int = 0) -> bool:
        """Block a subnet for `ms` from now; True when it was not blocked already."""
        ...

    async def blocks(self) -> list[Block]:
        """The blocks in force."""
        ...

    async def lift(self, source: str) -> bool:
        """Lift a block (the source as listed); False when it was not blocked."""
        ...

    async def lifted(self) -> dict[str, int]:
        """Sources whose block an operator lifted in the last 24 h, and when (ms)."""
        ...

    async def resume(self, provider: str, at_ms: int) -> bool:
        """False when the provider was not paused."""
        ...

    async def resumed_at(self, provider: str) -> int | None: ...

    async def set_sending_paused(self, paused: bool) -> None: ...


_BLOCK = Script(("otp_service.delivery", "block"))
_LIFT = Script(("otp_service.delivery", "lift"))


class RedisPauseState:
    def __init__(self, redis: RedisClient, keys: RedisKeys, *, clock: Clock = system_clock) -> None:
        self._redis = redis
        self._keys = keys
        self._clock = clock

    async def pauses(self) -> dict[str, str]:
        async with redis_guard("pauses"):
            raw = await self._redis.execute("HGETALL", self._keys.pauses)
        return {text(k): text(v) for k, v in zip(raw[::2], raw[1::2], strict=True)}

    async def pause(self, provider: str, reason: str, at_ms: int = 0) -> None:
        async with redis_guard("pause"):
            await asyncio.gather(
                self._redis.execute("HSET", self._keys.pauses, provider, reason),
                self._redis.execute("HSET", self._keys.paused_at, provider, at_ms),
            )

    async def paused_at(self, provider: str) -> int | None:
        async with redis_guard("paused_at"):
            value = await self._redis.execute("HGET", self._keys.paused_at, provider)
        return int(value) if value is not None else None

    def _block_key(self, kind: BlockKind, key: str) -> str:
        k = self._keys
        return k.client_blocked(key) if kind is BlockKind.CLIENT else k.source_blocked(key)

    async def block(self, block: Block) -> bool:
        ms = block.until_ms - block.since_ms
        async with redis_guard("block"):
            keys = (self._block_key(block.kind, block.key), self._keys.blocks)
            return bool(await _BLOCK(self._redis, keys, (block.source, block.entry(), ms)))

    async def block_source(self, subnet: str, ms: int, events: int = 0) -> bool:
        now = now_ms(self._clock)
        return await self.block(Block(subnet, BlockKind.SUBNET, subnet, subnet, events, now, now + ms))

    async def blocks(self) -> list[Block]:
        async with redis_guard("blocks"):
            raw = await self._redis.execute("HGETALL", self._keys.blocks)
        found = [Block.of(text(source), entry) for source, entry in zip(raw[::2], raw[1::2], strict=True)]
        now = now_ms(self._clock)
        if ended := [b.source for b in found if b.until_ms <= now]:
            async with redis_guard("blocks"):
                await self._redis.execute("HDEL", self._keys.blocks, *ended)
        return [b for b in found if b.until_ms > now]

    async def lift(self, source: str) -> bool:
        k = self._keys
        async with redis_guard("lift"):
            entry = await self._redis.execute("HGET", k.blocks, source)
            if entry is None:
                return False
            block = Block.of(source, entry)
            keys = (self._block_key(block.kind, block.key), k.blocks, k.blocks_lifted)
            return bool(await _LIFT(self._redis, keys, (source, now_ms(self._clock))))

    async def lifted(self) -> dict[str, int]:
        async with redis_guard("blocks_lifted"):
            raw = await self._redis.execute("HGETALL", self._keys.blocks_lifted)
        found = {text(k): int(v) for k, v in zip(raw[::2], raw[1::2], strict=True)}
        horizon = now_ms(self._clock) - DAY_MS
        if old := [source for source, at in found.items() if at < horizon]:
            async with redis_guard("blocks_lifted"):
                await self._redis.execute("HDEL", self._keys.blocks_lifted, *old)
        return {source: at for source, at in found.items() if at >= horizon}

    async def resume(self, provider: str, at_ms: int) -> bool:
        k = self._keys
        async with redis_guard("resume"):
            removed, _, _ = await asyncio.gather(
                self._redis.execute("HDEL", k.pauses, provider),
                self._redis.execute("HSET", k.resumed, provider, at_ms),
                self._redis.execute("DEL", k.sending_paused),
            )
        return bool(removed)

    async def resumed_at(self, provider: str) -> int | None:
        async with redis_guard("resumed_at"):
            value = await self._redis.execute("HGET", self._keys.resumed, provider)
        return int(value) if value is not None else None

    async def set_sending_paused(self, paused: bool) -> None:
        async with redis_guard("sending_paused"):
            if paused:
                await self._redis.execute("SET", self._keys.sending_paused, "1")
            else:
                await self._redis.execute("DEL", self._keys.sending_paused)


@dataclass(frozen=True, slots=True)
class Evidence:
    """The bounces and complaints that count, and the distinct mailboxes and subnets behind them."""

    bounces: int = 0
    complaints: int = 0
    bounced_mailboxes: int = 0
    complained_mailboxes: int = 0
    bounced_subnets: int = 0
    complained_subnets: int = 0

    @classmethod
    def of(
        cls, traced: Iterable[deliveries.Traced], mailboxes: Mailboxes, blocks: Iterable[Block]
    ) -> "Evidence":
        """Count what `traced` holds, except the events of blocked sources (CONTRACT §6)."""
        blocked = {(b.kind, b.key) for b in blocks}
        counted = [t for t in traced if (BlockKind.CLIENT, t.client) not in blocked
                   and (BlockKind.SUBNET, t.subnet) not in blocked]  # fmt: skip
        bounced = [t for t in counted if not t.complaint]
        complained = [t for t in counted if t.complaint]
        return cls(
            bounces=sum(t.count for t in bounced), complaints=sum(t.count for t in complained),
            bounced_mailboxes=len({mailboxes.key(t.email) for t in bounced}),
            complained_mailboxes=len({mailboxes.key(t.email) for t in complained}),
            bounced_subnets=len({t.subnet for t in bounced if t.subnet is not None}),
            complained_subnets=len({t.subnet for t in complained if t.subnet is not None}),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    provider: str
    sent: int
    bounces: int
    complaints: int
    bounce_rate: float | None
    complaint_rate: float | None
    paused: bool
    reason: str | None
    since: datetime
    max_bounce_rate: float
    max_complaint_rate: float
    min_volume: int
    evidence: Evidence = Evidence()


GUARD_ACTOR = "reputation-guard"
"""The audit log's key fingerprint for the guard's own pauses, resumes and blocks (CONTRACT §3)."""


class ReputationGuard(Background):
    """Pauses a provider only on evidence, and blames the client (module docstring)."""

    def __init__(
        self, *, settings: Settings, pauses: PauseState, engine: AsyncEngine, providers: list[str],
        audit: AuditLog | None = None, clock: Clock = system_clock,
    ) -> None:  # fmt: skip
        self._settings = settings
        self._pauses = pauses
        self._engine = engine
        self.providers = providers
        self._audit = audit
        self._clock = clock
        self._mailboxes = Mailboxes.of(settings)
        self._paused: set[str] = set()
        super().__init__()

    def healthy(self, provider: str) -> bool:
        """The worker's view, refreshed every check interval."""
        return provider not in self._paused

    async def report(self) -> list[ProviderHealth]:
        s = self._settings
        pauses = await self._pauses.pauses()
        blocks = await self._pauses.blocks()
        now = datetime.fromtimestamp(self._clock(), UTC)
        out = []
        async with database_guard("reputation.report"), self._engine.connect() as conn:
            for provider in self.providers:
                since = now - timedelta(seconds=s.reputation_window)
                resumed = await self._pauses.resumed_at(provider)
                if resumed is not None:
                    since = max(since, datetime.fromtimestamp(resumed / 1000, UTC))
                sent = await deliveries.count_sent(conn, since, provider=provider)
                found = Evidence.of(await deliveries.traced(conn, since, provider), self._mailboxes, blocks)
                out.append(ProviderHealth(
                    provider=provider, sent=sent, bounces=found.bounces, complaints=found.complaints,
                    bounce_rate=found.bounces / sent if sent else None,
                    complaint_rate=found.complaints / sent if sent else None,
                    paused=provider in pauses, reason=pauses.get(provider), since=since,
                    max_bounce_rate=s.reputation_max_bounce_rate,
                    max_complaint_rate=s.reputation_max_complaint_rate,
                    min_volume=s.reputation_min_volume, evidence=found,
                ))  # fmt: skip
        return out

    def _over(self, health: ProviderHealth) -> str | None:
        """Why this provider must be paused, or None: the rate over its threshold, the volume
        and the distinct mailboxes and subnets behind it at their minimums."""
        s, found = self._settings, health.evidence
        if health.sent < s.reputation_min_volume:
            return None
        if (
            health.bounce_rate is not None
            and health.bounce_rate > s.reputation_max_bounce_rate
            and found.bounced_mailboxes >= s.reputation_min_bounces
            and found.bounced_subnets >= s.reputation_min_sources
        ):
            return f"bounce rate {health.bounce_rate:.2%} over {s.reputation_max_bounce_rate:.2%}"
        if (
            health.complaint_rate is not None
            and health.complaint_rate > s.reputation_max_complaint_rate
            and found.complained_mailboxes >= s.reputation_min_complaints
            and found.complained_subnets >= s.reputation_min_sources
        ):
            return f"complaint rate {health.complaint_rate:.3%} over {s.reputation_max_complaint_rate:.3%}"
        return None

    async def _clients_over(self, lifted: dict[str, int]) -> list[deliveries.SourceEvents]:
        """The clients past the source limit in 24 h; for one whose block an operator lifted,
        only its events since count."""
        limit = self._settings.reputation_source_limit
        day_ago = datetime.fromtimestamp(self._clock(), UTC) - DAY
        async with database_guard("reputation.sources"), self._engine.connect() as conn:
            over = []
            for found in await deliveries.clients_over(conn, day_ago, limit):
                at = lifted.get(client_cidr(found.client))
                if at is not None:
                    after = datetime.fromtimestamp(at / 1000, UTC)
                    over += await deliveries.clients_over(conn, after, limit, client=found.client)
                else:
                    over.append(found)
        return over

    async def _block(self, block: Block) -> None:
        if not await self._pauses.block(block):
            return  # blocked already: logged and audited when it was
        log.warning("abuse.source_blocked", extra={"source": mask_subnet(block.source), "kind": block.kind,
                                                   "events": block.events})  # fmt: skip
        await self._record(
            "reputation.block", block.source, f"{block.kind}: {block.events} bounces and complaints in 24 h"
        )

    async def _block_sources(self) -> None:
        """Block the clients past the source limit, then the subnets with enough blocked clients
        (a client blocked before an operator lifted its subnet's block no longer counts)."""
        lifted = await self._pauses.lifted()
        now = now_ms(self._clock)
        for found in await self._clients_over(lifted):
            await self._block(Block(client_cidr(found.client), BlockKind.CLIENT, found.client, found.subnet,
                                    found.events, now, now + DAY_MS))  # fmt: skip
        by_subnet: dict[str, list[Block]] = {}
        for b in await self._pauses.blocks():
            if b.kind is BlockKind.CLIENT and b.subnet is not None and b.since_ms > lifted.get(b.subnet, 0):
                by_subnet.setdefault(b.subnet, []).append(b)
        for subnet, clients in by_subnet.items():
            if len(clients) >= self._settings.reputation_subnet_clients:
                events = sum(c.events for c in clients)
                await self._block(Block(subnet, BlockKind.SUBNET, subnet, subnet, events, now, now + DAY_MS))

    async def blocks(self) -> list[Block]:
        """The blocks in force (GET /api/v1/admin/blocks), newest first."""
        return sorted(await self._pauses.blocks(), key=lambda b: (-b.since_ms, b.source))

    async def lift(self, source: str) -> None:
        """Lift a block (an operator's call): the source's earlier events no longer count toward
        blocking it again."""
        if not await self._pauses.lift(source):
            raise NotFound(f"{source} is not blocked")
        log.warning("reputation.block_lifted", extra={"source": mask_subnet(source)})

    async def _record(self, action: str, target: str, note: str) -> None:
        if self._audit is not None:
            await self._audit.record(actor=GUARD_ACTOR, action=action, target=target, note=note)

    async def check(self) -> list[ProviderHealth]:
        """Block the sources past their limit, evaluate every provider, pause what crossed a
        threshold on enough evidence, resume what cooled off, update the shared state."""
        await self._block_sources()
        now_at = now_ms(self._clock)
        report = await self.report()
        for health in report:
            reason = self._over(health)
            if reason and not health.paused:
                await self._pauses.pause(health.provider, reason, now_at)
                await self._record("reputation.pause", health.provider, reason)
                log.error("reputation.provider_paused", extra={"provider": health.provider, "reason": reason,
                                                               "sent": health.sent})  # fmt: skip
            elif health.paused and reason is None:
                paused_at = await self._pauses.paused_at(health.provider) or 0
                if now_at - paused_at >= self._settings.reputation_cooloff * 1000:
                    # Cooled off and the thresholds hold (a blocked source's events no longer
                    # count): resumed by the guard itself.
                    await self._pauses.resume(health.provider, now_at)
                    await self._record("reputation.resume", health.provider, "cooled off; thresholds hold")
                    log.warning(
                        "reputation.provider_resumed", extra={"provider": health.provider, "by": GUARD_ACTOR}
                    )
        pauses = await self._pauses.pauses()
        self._paused = set(pauses)
        # Sends are held back only when no healthy provider is left: with a healthy fallback the
        # flag stays unset and the worker routes every job there (CONTRACT §6).
        all_paused = all(p in pauses for p in self.providers)
        await self._pauses.set_sending_paused(all_paused)
        if all_paused:
            log.error("reputation.sending_paused", extra={"providers": sorted(pauses)})
        return await self.report()

    async def resume(self, provider: str) -> bool:
        """Resume a paused provider (an operator's call); its rates count again from now."""
        if provider not in self.providers:
            raise NotFound(f"{provider} is not a configured provider")
        resumed = await self._pauses.resume(provider, now_ms(self._clock))
        self._paused.discard(provider)
        log.warning("reputation.provider_resumed", extra={"provider": provider, "was_paused": resumed})
        return resumed

    def loops(self) -> dict[str, Loop]:
        """Check every interval."""
        every = self._settings.reputation_check_interval
        return {"reputation": self.every(every, self.check, failed="reputation.check_failed")}

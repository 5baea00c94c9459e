"""Events out (CONTRACT §7): one signed JSON POST per change to OTP_EVENTS_WEBHOOK_URL.

Publishing is one XADD to a Redis Stream (the embedded store's too), so a request or a delivery
never waits on the integrator. The event is sealed (AES-GCM, like the delivery jobs): Redis holds
no address in clear. A sender in the worker process reads the stream through a consumer group and
posts each event signed as Standard Webhooks (`webhook-id`, `webhook-timestamp`,
`webhook-signature`: the svix library's own signing), re-signed at each attempt with that
attempt's time. A 2xx ends it. Anything else moves it, in one script, from the stream to a
retry schedule (a sorted set by due time): about 5 s, 15 s, 1 min, 5 min and 30 min apart, then
hourly, until 24 h after the event, keeping its `webhook-id`. An event taken for an attempt
is leased, so a sender that dies mid-attempt loses nothing: the stream's pending entry is claimed
again, a retry's lease runs out.
"""

import asyncio
import itertools
import json
import secrets
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from cryptography.exceptions import InvalidTag
from svix.webhooks import Webhook

from otp_service.background import Background
from otp_service.clock import Clock, now_ms, system_clock
from otp_service.errors import Unavailable
from otp_service.logs import get_logger
from otp_service.metrics import EVENTS_OUT
from otp_service.redisio import RedisClient, RedisKeys, Script, redis_guard
from otp_service.redisio.streams import ConsumerGroup, Entry
from otp_service.sealing import Sealer
from otp_service.supervise import Beat, Loop

log = get_logger("events")

EventType = Literal[
    "otp.sent",
    "otp.suppressed",
    "otp.failed",
    "otp.delivered",
    "otp.delayed",
    "otp.bounced",
    "otp.complained",
    "otp.verified",
    "otp.reported",
]
GROUP = "senders"
RETRY_DELAYS_S = (5, 15, 60, 300, 1800)
"""Seconds between the first attempts (CONTRACT §7: after about 5 s, 15 s, 1 min, 5 min, 30 min);
then an hour each."""
HOURLY_S = 3600
GIVE_UP_AFTER_S = 86400
"""An event not delivered 24 h after it happened is dropped (counted, logged)."""
LEASE_MS = 60_000
"""How long an attempt may take before its event is handed out again."""
POST_TIMEOUT_S = 10.0
BATCH = 16
"""Events taken at once; with 8 posts in flight and a receiver that times out, a batch takes 20 s,
well inside the lease."""
_OFFSETS_S = tuple(itertools.accumulate(RETRY_DELAYS_S))
"""When each of the first retries falls, counted from the event: 5, 20, 80, 380, 2180 s."""


def next_attempt(event_ms: int, now: int) -> int | None:
    """When to try again (ms), on the schedule counted from the event, so that a sender that
    restarted keeps to it; None once 24 h have passed."""
    for offset in _OFFSETS_S:
        due = event_ms + offset * 1000
        if due > now:
            return due
    due = event_ms + (_OFFSETS_S[-1] + HOURLY_S) * 1000
    while due <= now:
        due += HOURLY_S * 1000
    return due if due <= event_ms + GIVE_UP_AFTER_S * 1000 else None


@dataclass(frozen=True, slots=True)
class OutEvent:
    webhook_id: str
    type: str
    at_ms: int
    data: dict[str, Any]

    def body(self) -> str:
        timestamp = datetime.fromtimestamp(self.at_ms / 1000, UTC).isoformat(timespec="milliseconds")
        return json.dumps(
            {"type": self.type, "timestamp": timestamp.replace("+00:00", "Z"), "data": self.data},
            separators=(",", ":"), ensure_ascii=False,
        )  # fmt: skip


class EventSeal:
    """Events as Redis keeps them: sealed (sealing.py), under an AEAD purpose of their own."""

    PURPOSE = b"otp-event"

    def __init__(self, sealer: Sealer) -> None:
        self._sealer = sealer

    def seal(self, event: OutEvent) -> bytes:
        plain = {"i": event.webhook_id, "t": event.type, "m": str(event.at_ms), "d": json.dumps(event.data)}
        return self._sealer.seal(plain, self.PURPOSE)

    def open(self, sealed: bytes) -> OutEvent:
        data = self._sealer.open(sealed, self.PURPOSE)
        return OutEvent(data["i"], data["t"], int(data["m"]), json.loads(data["d"]))


class EventOutbox:
    """Publishes events: one XADD each; never raises (an event lost to a Redis outage is logged,
    and the request or delivery that caused it goes on)."""

    def __init__(
        self, redis: RedisClient, keys: RedisKeys, seal: EventSeal, *, clock: Clock = system_clock,
        apps: Collection[str] | None = None,
    ) -> None:  # fmt: skip
        """`apps`: with applications (CONTRACT §8), those whose events go somewhere ('' the
        service-wide one); their events carry `app`, and an application with no receiver
        publishes nothing. None: no applications, and no `app` in any event."""
        self._redis = redis
        self._stream = keys.events
        self._seal = seal
        self._clock = clock
        self._apps = None if apps is None else frozenset(apps)

    async def publish(
        self, type_: EventType, data: Mapping[str, Any], *, event_id: str | None = None, app: str = ""
    ) -> None:
        """`event_id`: what makes the event itself unique (a job and its outcome, a provider's event
        id), so that a step repeated after a crash posts the same `webhook-id` again; else random.
        `app`: the application the event is of ('' the service-wide one)."""
        if self._apps is not None:
            if app not in self._apps:
                return
            data = {**data, "app": app or None}
        webhook_id = f"msg_{event_id}" if event_id else f"msg_{secrets.token_hex(12)}"
        event = OutEvent(webhook_id, type_, now_ms(self._clock), dict(data))
        try:
            async with redis_guard("events.publish"):
                await self._redis.execute("XADD", self._stream, "*", "e", self._seal.seal(event))
        except Unavailable:
            EVENTS_OUT.labels(type_, "lost").inc()
            log.error("events.publish_failed", extra={"type": type_, "webhook_id": webhook_id})
            return
        EVENTS_OUT.labels(type_, "queued").inc()


class EventSender(Background):
    """Posts queued events to the integrator; run in the worker process (assembly.running_worker)."""

    _RETRY = Script(("otp_service.events", "retry"))
    _DUE = Script(("otp_service.events", "due"))

    def __init__(
        self, *, redis: RedisClient, keys: RedisKeys, seal: EventSeal, url: str | None, secret: str | None,
        http: httpx.AsyncClient, name: str, concurrency: int = 8, clock: Clock = system_clock,
        block_ms: int = 1000, apps: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:  # fmt: skip
        """`url` and `secret`: the service-wide application's receiver (None: it has none);
        `apps`: each application's (url, secret), CONTRACT §8, chosen by the event's `app`."""
        self._redis = redis
        self._group = ConsumerGroup(redis, keys.events, GROUP, name="events")
        self._stream, self._schedule = keys.events, keys.events_retry
        self._seal = seal
        self._targets = {app: (u, Webhook(k)) for app, (u, k) in (apps or {}).items()}
        if url is not None and secret is not None:
            self._targets[""] = (url, Webhook(secret))
        self._http = http
        self._name = name
        self._slots = asyncio.Semaphore(concurrency)
        self._clock = clock
        self._block_ms = block_ms
        super().__init__()

    async def aclose(self) -> None:
        await self._group.aclose()

    def loops(self) -> dict[str, Loop]:
        return {"events-new": self._new_events, "events-retry": self._retries}

    # One attempt

    async def attempt(self, event: OutEvent) -> bool:
        """Post once, signed for now, to the receiver of the event's application; True on a 2xx,
        and for an event whose application has no receiver any more (removed from OTP_APPS)."""
        target = self._targets.get(event.data.get("app") or "")
        if target is None:
            EVENTS_OUT.labels(event.type, "dropped").inc()
            log.warning("events.no_receiver", extra={"type": event.type, "webhook_id": event.webhook_id})
            return True
        url, webhook = target
        body = event.body()
        sent_at = datetime.fromtimestamp(self._clock(), UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": event.webhook_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": webhook.sign(event.webhook_id, sent_at, body),
            "user-agent": "otp-service-events/1",
        }
        async with self._slots:
            started = time.perf_counter()
            try:
                res = await self._http.post(
                    url, content=body.encode(), headers=headers, timeout=POST_TIMEOUT_S
                )
                ok = 200 <= res.status_code < 300
                why = str(res.status_code)
            except httpx.HTTPError as exc:
                ok, why = False, type(exc).__name__
        if ok:
            EVENTS_OUT.labels(event.type, "delivered").inc()
        else:
            seconds = round(time.perf_counter() - started, 3)
            log.warning(
                "events.attempt_failed",
                extra={"type": event.type, "webhook_id": event.webhook_id, "answer": why, "seconds": seconds},
            )
        return ok

    # New events: the stream

    async def ensure_group(self) -> None:
        await self._group.create()

    async def _new_events(self, beat: Beat) -> None:
        await self.ensure_group()
        while not self.stopping:
            try:
                found = await self._read()
                beat.ok()
            except Unavailable:
                await self.pause(1.0)
                continue
            if found:
                await asyncio.gather(
                    *(self._first_attempt(entry_id, fields[b"e"]) for entry_id, fields in found)
                )

    async def _read(self) -> list[Entry]:
        """Entries a sender that died left pending (idle past the lease), then new ones."""
        stale = await self._group.reclaim(self._name, LEASE_MS, BATCH)
        return stale or await self._group.read(self._name, BATCH, self._block_ms)

    async def _first_attempt(self, entry_id: str, sealed: bytes) -> None:
        event = self._open(sealed)
        if event is None or await self.attempt(event):
            await self._group.ack(entry_id)
            return
        due = next_attempt(event.at_ms, now_ms(self._clock))
        if due is None:
            await self._group.ack(entry_id)
            self._gave_up(event)
            return
        async with redis_guard("events.retry"):
            await self._RETRY(self._redis, [self._stream, self._schedule], [GROUP, entry_id, sealed, due])
        EVENTS_OUT.labels(event.type, "retry_scheduled").inc()

    # Retries: the schedule

    async def _retries(self, beat: Beat) -> None:
        while not self.stopping:
            try:
                async with redis_guard("events.due"):
                    due = await self._DUE(
                        self._redis, [self._schedule], [now_ms(self._clock), LEASE_MS, BATCH]
                    )
                beat.ok()
            except Unavailable:
                await self.pause(1.0)
                continue
            members = due[::2]
            if members:
                await asyncio.gather(*(self._retry(member) for member in members))
            else:
                await self.pause(1.0)

    async def _retry(self, sealed: bytes) -> None:
        event = self._open(sealed)
        if event is None or await self.attempt(event):
            async with redis_guard("events.reschedule"):
                await self._redis.execute("ZREM", self._schedule, sealed)
            return
        due = next_attempt(event.at_ms, now_ms(self._clock))
        async with redis_guard("events.reschedule"):
            if due is None:
                await self._redis.execute("ZREM", self._schedule, sealed)
                self._gave_up(event)
            else:
                await self._redis.execute("ZADD", self._schedule, "XX", due, sealed)
                EVENTS_OUT.labels(event.type, "retry_scheduled").inc()

    def _open(self, sealed: bytes) -> OutEvent | None:
        """None for an event sealed under another OTP_SECRET_KEY (or damaged): dropped, logged."""
        try:
            return self._seal.open(sealed)
        except (InvalidTag, ValueError, KeyError) as exc:
            log.error("events.undecryptable", extra={"error": type(exc).__name__})
            return None

    def _gave_up(self, event: OutEvent) -> None:
        EVENTS_OUT.labels(event.type, "expired").inc()
        log.error("events.given_up", extra={"type": event.type, "webhook_id": event.webhook_id})

    async def backlog(self) -> tuple[int, int]:
        """(events in the stream, events waiting for a retry)."""
        async with redis_guard("events.backlog"):
            return (
                int(await self._redis.execute("XLEN", self._stream)),
                int(await self._redis.execute("ZCARD", self._schedule)),
            )

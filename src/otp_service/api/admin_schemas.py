"""The admin API's request and response bodies (api/admin.py)."""

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from otp_service.db.models import Suppression
from otp_service.delivery.lookup import DeliveryView, MatchedEvent
from otp_service.delivery.repository import DeliveryOutcome
from otp_service.delivery.reputation import Block, ProviderHealth
from otp_service.delivery.stats import Stats, Tally
from otp_service.delivery.usage import AppUsage, Usage


class SuppressionOut(BaseModel):
    email: str
    reason: str
    source: str
    note: str | None
    bounce_count: int
    complaint_count: int
    provider_event_id: str | None = Field(
        description="The provider event that caused it (source resend: svix-id; ses: SNS MessageId)"
    )
    provider_message_id: str | None
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, row: Suppression) -> "SuppressionOut":
        return cls(
            email=row.email, reason=row.reason, source=row.source, note=row.note,
            bounce_count=row.bounce_count, complaint_count=row.complaint_count,
            provider_event_id=row.provider_event_id, provider_message_id=row.provider_message_id,
            created_at=row.created_at.isoformat(),
            updated_at=row.updated_at.isoformat(),
        )  # fmt: skip


class SuppressionPage(BaseModel):
    items: list[SuppressionOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page; null at the end")


# PostgreSQL text cannot hold a NUL character: free text that reaches the database is refused
# here (422, the caller's mistake) rather than failing there (a 503 that blames the database).
NO_NUL = r"^[^\x00]*$"
NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"  # stricter, for addresses: they never hold a control character


class SuppressionIn(BaseModel):
    reason: Literal["manual"] = "manual"
    note: str | None = Field(default=None, max_length=2000, pattern=NO_NUL)


class ChannelUsage(BaseModel):
    sent_24h: int
    limit_24h: int
    remaining: int


class AppUsageOut(BaseModel):
    app: str = Field(description="The application ('': the service-wide one)")
    accepted_24h: int = Field(
        description="Its sends the delivery worker handled (every outcome; a send still queued is not "
        "counted yet, a test recipient's never)"
    )
    sent_24h: int = Field(description="Those handed to a provider")
    bounces_24h: int
    complaints_24h: int
    bounce_rate: float | None
    complaint_rate: float | None

    @classmethod
    def of(cls, a: AppUsage) -> "AppUsageOut":
        return cls(
            app=a.app, accepted_24h=a.accepted_24h, sent_24h=a.sent_24h, bounces_24h=a.bounces_24h,
            complaints_24h=a.complaints_24h, bounce_rate=a.bounce_rate, complaint_rate=a.complaint_rate,
        )  # fmt: skip


class UsageOut(BaseModel):
    channels: dict[str, ChannelUsage]
    send_rate: dict[str, float]
    delivered_24h: int
    bounces_24h: int
    complaints_24h: int
    bounce_rate: float | None
    complaint_rate: float | None
    workers_alive: int = Field(description="Delivery workers whose heartbeat is current")
    test_recipients: int = Field(description="Entries of OTP_TEST_RECIPIENTS (addresses or *@domain)")
    application: AppUsageOut | None = Field(
        description="With ?app=: that application's own part of the 24 h (CONTRACT §8); else null"
    )

    @classmethod
    def of(cls, u: Usage) -> "UsageOut":
        return cls(
            channels={
                c: ChannelUsage(sent_24h=n, limit_24h=u.limits[c], remaining=u.remaining(c))
                for c, n in u.sent_24h.items()
            },
            send_rate={
                "limit_per_second": float(u.send_rate_limit),
                "current_per_second": u.current_send_rate,
            },
            delivered_24h=u.delivered_24h,
            bounces_24h=u.bounces_24h,
            complaints_24h=u.complaints_24h,
            bounce_rate=u.bounce_rate,
            complaint_rate=u.complaint_rate,
            workers_alive=u.workers_alive,
            test_recipients=u.test_recipients,
            application=AppUsageOut.of(u.application) if u.application is not None else None,
        )


class ProviderHealthOut(BaseModel):
    provider: str
    paused: bool
    reason: str | None
    sent: int
    bounces: int
    complaints: int
    bounce_rate: float | None
    complaint_rate: float | None
    since: str
    max_bounce_rate: float
    max_complaint_rate: float
    min_volume: int
    bounced_mailboxes: int = Field(description="Distinct mailboxes behind the counted bounces (CONTRACT §6)")
    complained_mailboxes: int
    bounced_subnets: int = Field(description="Distinct subnets that requested the bounced sends")
    complained_subnets: int

    @classmethod
    def of(cls, h: ProviderHealth) -> "ProviderHealthOut":
        e = h.evidence
        return cls(
            provider=h.provider, paused=h.paused, reason=h.reason, sent=h.sent, bounces=h.bounces,
            complaints=h.complaints, bounce_rate=h.bounce_rate, complaint_rate=h.complaint_rate,
            since=h.since.isoformat(), max_bounce_rate=h.max_bounce_rate,
            max_complaint_rate=h.max_complaint_rate, min_volume=h.min_volume,
            bounced_mailboxes=e.bounced_mailboxes, complained_mailboxes=e.complained_mailboxes,
            bounced_subnets=e.bounced_subnets, complained_subnets=e.complained_subnets,
        )  # fmt: skip


class BlockOut(BaseModel):
    source: str = Field(
        description="The blocked client (an IPv4 address as its /32, an IPv6 client as its /64) or subnet, "
        "as DELETE /api/v1/admin/blocks/{source} takes it"
    )
    kind: Literal["client", "subnet"]
    events: int = Field(description="Bounces + complaints in 24 h traced to the sends it requested")
    since: str
    until: str

    @classmethod
    def of(cls, b: Block) -> "BlockOut":
        return cls(
            source=b.source, kind=b.kind.value, events=b.events, since=_at(b.since_ms), until=_at(b.until_ms)
        )


class BlocksOut(BaseModel):
    items: list[BlockOut]


def _at(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


class AuditOut(BaseModel):
    at: str
    key_fingerprint: str = Field(description="First 16 hex digits of the key's SHA-256; never the key")
    action: str = Field(
        description="suppression.put | suppression.delete | reputation.pause | reputation.resume | "
        "reputation.block | reputation.unblock"
    )
    target: str = Field(description="The address, the provider, or the blocked source (CIDR)")
    note: str | None


class AuditPageOut(BaseModel):
    items: list[AuditOut]
    next_cursor: str | None


class ProviderEventOut(BaseModel):
    kind: str = Field(description="delivered | delayed | bounced | complained | sent | suppressed | …")
    type: str = Field(description="The provider's event type")
    provider: str
    event_id: str
    occurred_at: str | None
    received_at: str
    suppressed: bool = Field(description="The event suppressed the address")

    @classmethod
    def of(cls, e: MatchedEvent) -> "ProviderEventOut":
        return cls(
            kind=e.kind, type=e.type, provider=e.provider, event_id=e.event_id,
            occurred_at=iso(e.occurred_at), received_at=e.received_at.isoformat(), suppressed=e.suppressed,
        )  # fmt: skip


class DeliveryOut(BaseModel):
    job_id: str
    outcome: DeliveryOutcome
    queued_at: str | None
    sent_at: str | None = Field(description="When the provider accepted it (outcome sent)")
    recorded_at: str
    provider: str | None
    provider_message_id: str | None
    attempts: int = Field(description="Provider calls made for the job")
    events: list[ProviderEventOut]
    app: str = Field(description="The application that sent it (CONTRACT §8; '': the service-wide one)")

    @classmethod
    def of(cls, view: DeliveryView) -> "DeliveryOut":
        r = view.record
        return cls(
            job_id=r.job_id, outcome=DeliveryOutcome(r.outcome), queued_at=iso(r.queued_at),
            sent_at=iso(r.created_at) if r.outcome == DeliveryOutcome.SENT else None,
            recorded_at=r.created_at.isoformat(), provider=r.provider,
            provider_message_id=r.provider_message_id, attempts=r.attempts,
            events=[ProviderEventOut.of(e) for e in view.events], app=r.app,
        )  # fmt: skip


class DeliveryPageOut(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class _FromDomain(BaseModel):
    """Read from the look-up's domain objects by attribute: the public answer is these fields,
    so renaming a domain field cannot change it silently."""

    model_config = ConfigDict(from_attributes=True)


class WindowOut(_FromDomain):
    count: int
    limit: int
    retry_after: int = Field(description="Seconds until the next send is admitted here (0: it would be)")


class AddressLimitsOut(_FromDomain):
    email: str
    mailbox: str = Field(description="The key every per-address limit compares (CONTRACT §6)")
    address_check: str | None = Field(
        description="The refusal the address itself gets before any limit (disposable_email, email_typo, …)"
    )
    suppressed: bool
    suppression_reason: str | None
    cooldown_remaining: int
    daily: WindowOut
    remembered_sources: int
    remembered_cooldown_remaining: int = Field(
        description="The cooldown that sends from the address's remembered sources share, apart"
    )
    remembered_daily: WindowOut
    code_expires_in: int = Field(description="Seconds the live code has left (0: none)")
    domain: str | None = Field(
        description="The registrable recipient domain; null for a shared mail provider"
    )
    domain_daily: WindowOut | None
    reported_for: int = Field(
        description='Seconds a "not me" report still holds (0: none): meanwhile only the address\'s '
        "remembered sources' sends are emailed; others get the usual 202 and no email"
    )


class ConversionLimitsOut(_FromDomain):
    sends_24h: int
    verified_24h: int
    min_sends: int
    min_ratio: float
    slows_subnet: bool
    guard_rate: str
    subnet_sends_in_guard_window: int


class ClientLimitsOut(_FromDomain):
    ip: str
    client: str
    subnet: str
    client_rate: WindowOut
    subnet_rate: WindowOut
    conversion: ConversionLimitsOut
    blocked_for: int = Field(
        description="Seconds the reputation guard's block of this client or its subnet has left"
    )
    client_blocked_for: int = Field(description="Seconds the block of this client has left (0: none)")
    subnet_blocked_for: int = Field(description="Seconds the block of its subnet has left (0: none)")
    remembered_source: bool | None = Field(
        description="Whether (the address's mailbox, this subnet) is a remembered source; null without an "
        "address"
    )


class LimitsOut(_FromDomain):
    address: AddressLimitsOut | None
    client: ClientLimitsOut | None
    global_daily: WindowOut = Field(
        description="Against the share of the cap this source may use: all of it for a remembered source, "
        "else the cap without its reserve"
    )
    global_reserve: int = Field(description="Sends of the global daily cap kept for remembered sources")
    sending_paused: bool
    would_refuse: str | None = Field(
        description="The code a send (without a captcha token) would be refused with now, or null: accepted "
        "(a suppressed address still gets the 202, with no email)"
    )
    retry_after: int = Field(description="The Retry-After that refusal would carry (seconds)")
    would_withhold: bool = Field(
        description='Accepted and emailed nothing: the address was reported "not me" and this client is '
        "not one of its remembered sources"
    )
    app: str = Field(description="The application whose send this is ('': the service-wide one)")


class StagePercentiles(BaseModel):
    p50: float | None = Field(description="Seconds; null when nothing was measured")
    p95: float | None


class VerifyFailuresOut(BaseModel):
    wrong_code: int = Field(description="invalid_code: neither the code nor the one it replaced")
    expired: int = Field(description="code_expired: no live code (never sent, expired, used or burnt)")
    max_attempts: int = Field(description="max_attempts_reached: the wrong code that used the last attempt")
    superseded: int = Field(
        description="A wrong code that was the address's previous code, replaced by a newer send while "
        "still live (counted here whether it was answered invalid_code or max_attempts_reached)"
    )


class StatsCounts(BaseModel):
    accepted: int = Field(description="Sends whose job the worker handled in the window")
    sent: int
    delivered: int
    bounced: int
    complained: int
    verified: int
    conversion: float | None = Field(description="verified / sent; null when nothing was sent")
    accepted_to_sent: StagePercentiles
    sent_to_delivered: StagePercentiles
    sent_to_verified: StagePercentiles
    verify_failures: VerifyFailuresOut = Field(
        description="Refused verifies by reason: by provider, that of the address's latest email ('none': "
        "none was sent); by domain, the address's"
    )

    @classmethod
    def of(cls, t: Tally) -> "StatsCounts":
        def stage(name: str) -> StagePercentiles:
            p50, p95 = t.percentiles(name)
            return StagePercentiles(p50=p50, p95=p95)

        return cls(
            accepted=t.accepted, sent=t.sent, delivered=t.delivered, bounced=t.bounced,
            complained=t.complained, verified=t.verified, conversion=t.conversion,
            accepted_to_sent=stage("accepted_to_sent"), sent_to_delivered=stage("sent_to_delivered"),
            sent_to_verified=stage("sent_to_verified"),
            verify_failures=VerifyFailuresOut.model_validate({r.value: n for r, n in t.failures.items()}),
        )  # fmt: skip


class StatsOut(BaseModel):
    hours: int
    since: datetime = Field(description="The window's start: the start of the hour `hours` hours ago")
    app: str = Field(description="The application counted ('': the service-wide one)")
    total: StatsCounts
    by_provider: dict[str, StatsCounts] = Field(description='"none": sends never handed to a provider')
    by_domain: dict[str, StatsCounts] = Field(
        description="The 20 largest registrable recipient domains (ICANN section of the Public Suffix List: "
        "mail.example.co.uk counts as example.co.uk), the rest as other"
    )

    @classmethod
    def of(cls, s: Stats) -> "StatsOut":
        return cls(
            hours=s.hours, since=s.since, app=s.app, total=StatsCounts.of(s.total),
            by_provider={k: StatsCounts.of(v) for k, v in s.by_provider.items()},
            by_domain={k: StatsCounts.of(v) for k, v in s.by_domain.items()},
        )  # fmt: skip

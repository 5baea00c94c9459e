"""'Why was this refused?' (GET /api/v1/admin/limits, CONTRACT §3): every limit a send would meet
for an address and a client IP, read from the same keys the send decision reads (otp/lua/limits.lua,
a no-writes script) and the suppression table, and which refusal a send would get now: the send
decision's own (otp/lua/_decide.lua), run read-only. Nothing in it changes any counter.

With applications (CONTRACT §8) the look-up is one application's: its send (its own keys for the
address's cooldown, daily cap, remembered sources and live code) and its settings (its daily cap);
what is shared (client, subnet, domain, global cap, blocks, suppression) reads the same for all."""

import math
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from otp_service.db.engine import database_session
from otp_service.errors import InvalidRequest, NotFound, ServiceError
from otp_service.limits.throttle import ConversionGuard
from otp_service.net import Client, Prefixes, resolve
from otp_service.otp.service import CHANNEL, Identity, OtpService
from otp_service.otp.store import LimitsState
from otp_service.settings import Settings
from otp_service.suppression import repository as suppressions


@dataclass(frozen=True, slots=True)
class Window:
    count: int
    limit: int
    retry_after: int
    """Seconds until the next send is admitted here (0: it would be)."""


@dataclass(frozen=True, slots=True)
class AddressLimits:
    email: str
    mailbox: str
    """The key every per-address limit and suppression compares (CONTRACT §6)."""
    address_check: str | None
    """The refusal the address itself gets before any limit (disposable_email, email_typo, …)."""
    suppressed: bool
    suppression_reason: str | None
    cooldown_remaining: int
    daily: Window
    remembered_sources: int
    remembered_cooldown_remaining: int
    """The cooldown that sends from the address's remembered sources share, apart."""
    remembered_daily: Window
    code_expires_in: int
    """Seconds the live code has left (0: none)."""
    domain: str | None
    """The registrable recipient domain, or None for a shared mail provider (exempt)."""
    domain_daily: Window | None
    reported_for: int = 0
    """Seconds a "not me" report still holds (0: none): meanwhile only its remembered sources'
    sends are emailed (CONTRACT §4)."""


@dataclass(frozen=True, slots=True)
class ConversionLimits:
    sends_24h: int
    verified_24h: int
    min_sends: int
    min_ratio: float
    slows_subnet: bool
    guard_rate: str
    subnet_sends_in_guard_window: int


@dataclass(frozen=True, slots=True)
class ClientLimits:
    ip: str
    client: str
    subnet: str
    client_rate: Window
    subnet_rate: Window
    conversion: ConversionLimits
    blocked_for: int
    """Seconds the reputation guard's block of this client or its subnet has left (0: none)."""
    client_blocked_for: int
    subnet_blocked_for: int
    remembered_source: bool | None
    """Whether (the address's mailbox, this subnet) is a remembered source; None without an address."""


@dataclass(frozen=True, slots=True)
class LimitsReport:
    address: AddressLimits | None
    client: ClientLimits | None
    global_daily: Window
    """Against the share of the cap this source may use: all of it for a remembered source, else
    the cap without its reserve."""
    global_reserve: int
    """Sends of the global cap kept for remembered sources."""
    sending_paused: bool
    would_refuse: str | None
    """The code a send would be refused with now (considering only what was asked about), or
    None: it would be accepted (a suppressed address still gets the 202, with no email)."""
    retry_after: int
    would_withhold: bool = False
    """Accepted, and emailed nothing: the address was reported "not me" and the client is not one
    of its remembered sources (the send decision's own verdict, run read-only)."""
    app: str = ""
    """The application whose send was asked about ('' the service-wide one)."""


def _seconds(ms: int) -> int:
    return -(-ms // 1000)


class LimitsLookup:
    def __init__(
        self,
        *,
        settings: Settings,
        apps: Mapping[str, OtpService],
        sessions: async_sessionmaker[AsyncSession],
    ) -> None:
        """`apps`: each application's send by id, '' the service-wide one (WebState.apps and otp)."""
        self._s = settings
        self._apps = apps
        self._sessions = sessions
        self._guard = ConversionGuard.of(settings)
        self._prefixes: Prefixes = settings.client_prefixes()

    def client_of(self, ip: str) -> Client:
        client = resolve(ip.strip(), None, (), self._prefixes)
        if "/" not in client.subnet:  # resolve() names a non-address by itself
            raise InvalidRequest("ip: not an IP address")
        return client

    async def explain(self, email: str | None, ip: str | None, app: str = "") -> LimitsReport:
        """As application `app`'s next send would decide ('' the service-wide one); an id that is
        not configured: NotFound."""
        otp, view = self._apps.get(app), self._s.app_view(app)
        if otp is None or view is None:
            raise NotFound("No such application")
        if not email and not ip:
            raise InvalidRequest("give email, ip, or both")
        client = self.client_of(ip) if ip else None
        address, check = None, None
        if email:
            try:
                address = otp.check_address(email)
            except ServiceError as refused:
                check = refused.code
                address = email.strip().lower()
        ident, state = await otp.limits(address, client)
        suppression = await self._suppression(address, ident)
        return self._report(view, address, check, ident, client, state, suppression)

    async def _suppression(self, address: str | None, ident: Identity | None) -> str | None:
        if address is None or ident is None:
            return None
        async with database_session(self._sessions) as session:
            row = await suppressions.find(session, address)
        return row.reason if row is not None else None

    def _report(
        self, s: Settings, email: str | None, check: str | None, ident: Identity | None,
        client: Client | None, st: LimitsState, suppression: str | None,
    ) -> LimitsReport:  # fmt: skip
        send, subnet = s.rate("otp_send"), s.rate("otp_send_subnet")
        global_limit = s.global_daily_limits.get(CHANNEL, 0)
        reserve = math.ceil(global_limit * s.global_reserve)
        usable = global_limit if st.remembered else global_limit - reserve
        glob = Window(st.global_sends, usable, _seconds(st.global_wait))
        address = None
        remembered = bool(st.remembered) if ident is not None and client is not None else None
        if email is not None and ident is not None:
            domain_daily = None
            if ident.domain is not None:
                domain_daily = Window(st.domain, s.domain_daily_limit, _seconds(st.domain_wait))
            address = AddressLimits(
                email=email, mailbox=ident.mailbox, address_check=check, suppressed=suppression is not None,
                suppression_reason=suppression, cooldown_remaining=_seconds(st.cooldown),
                daily=Window(st.daily, s.per_account_daily_limit, _seconds(st.daily_wait)),
                remembered_sources=st.remembered_sources,
                remembered_cooldown_remaining=_seconds(st.remembered_cooldown),
                remembered_daily=Window(st.remembered_daily, s.per_account_daily_limit,
                                        _seconds(st.remembered_daily_wait)),
                code_expires_in=_seconds(st.code_left), domain=ident.domain, domain_daily=domain_daily,
                reported_for=_seconds(st.reported),
            )  # fmt: skip
        client_limits = None
        if client is not None:
            client_limits = ClientLimits(
                ip=client.ip, client=client.key, subnet=client.subnet,
                client_rate=Window(st.client_sends, send.limit, _seconds(st.client_wait)),
                subnet_rate=Window(st.subnet_sends, subnet.limit, _seconds(st.subnet_wait)),
                conversion=ConversionLimits(
                    sends_24h=st.guard_sends, verified_24h=st.guard_verified, min_sends=self._guard.min_sends,
                    min_ratio=self._guard.min_ratio, slows_subnet=bool(st.guard_slows),
                    guard_rate=str(self._guard.rate), subnet_sends_in_guard_window=st.guard_recent,
                ),
                blocked_for=_seconds(max(st.client_blocked, st.subnet_blocked)),
                client_blocked_for=_seconds(st.client_blocked),
                subnet_blocked_for=_seconds(st.subnet_blocked),
                remembered_source=remembered,
            )  # fmt: skip
        # The address's own refusal comes first (the send refuses it before any limit); else the
        # send decision's own verdict (otp/lua/_decide.lua, run read-only).
        refusal, wait = (check, 0) if check is not None else (st.refusal, _seconds(st.wait))
        withhold = refusal is None and bool(st.withheld)
        return LimitsReport(
            address, client_limits, glob, reserve, bool(st.paused), refusal, wait, withhold, s.app
        )

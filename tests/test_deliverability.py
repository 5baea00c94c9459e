"""The deliverability check against a real DNS server on loopback (dnslib), over UDP as in
production: MX, null MX, implicit MX (A/AAAA), NXDOMAIN, no records, SERVFAIL and silence."""

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from dnslib import AAAA, MX, QTYPE, RCODE, RR, TXT, A, DNSRecord
from dnslib.dns import DNSError
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

from otp_service.settings import Settings
from otp_service.validation.deliverability import DeliverabilityCheck, Verdict, make_resolver
from tests.support import FakeClock, drain, free_port, unique_email

ZONE: dict[str, list[Any]] = {
    "good.example": [MX("mx.good.example", 10)],
    "mx.good.example": [A("192.0.2.25")],
    "nullmx.example": [MX(".", 0)],
    "a-only.example": [A("192.0.2.1")],
    "aaaa-only.example": [AAAA("2001:db8::1")],
    "nothing.example": [TXT("v=spf1 -all")],
}


class Zone(BaseResolver):  # type: ignore[misc]
    """Answers from ZONE; NXDOMAIN for any other name; SERVFAIL for servfail.example; nothing at all
    for slow.example. Records every question."""

    def __init__(self) -> None:
        self.questions: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        with self.lock:
            self.questions.append((name, qtype))
        reply = request.reply()
        if name == "slow.example":
            raise DNSError("no answer")  # the server drops the question
        if name == "servfail.example":
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if name not in ZONE:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for rdata in ZONE[name]:
            if type(rdata).__name__ == qtype:
                reply.add_answer(RR(request.q.qname, QTYPE.reverse[qtype], rdata=rdata, ttl=60))
        return reply

    def asked(self, name: str) -> list[str]:
        with self.lock:
            return [t for n, t in self.questions if n == name]


class Dns:
    def __init__(self, zone: Zone, port: int) -> None:
        self.zone = zone
        self.port = port
        self.nameserver = f"127.0.0.1:{port}"


@pytest.fixture
def dns_server() -> Iterator[Dns]:
    zone = Zone()
    port = free_port()
    server = DNSServer(
        zone,
        port=port,
        address="127.0.0.1",
        logger=DNSLogger("-recv,-send,-request,-reply,-truncated,-error,-data"),
    )
    # As server.start_thread() does, polling for stop() every 20 ms rather than 0.5 s (the
    # default), which each test's teardown would wait out.
    threading.Thread(target=server.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        yield Dns(zone, port)
    finally:
        server.stop()
        server.server.server_close()


def checker(dns: Dns, clock: FakeClock | None = None, timeout: float = 1.0) -> DeliverabilityCheck:
    resolver = make_resolver([("127.0.0.1", dns.port)], timeout)
    return DeliverabilityCheck(resolver, never_look_up=["gmail.com", "qq.com"], clock=clock or FakeClock())


@pytest.mark.parametrize(
    ("domain", "verdict"),
    [
        ("good.example", Verdict.DELIVERABLE),
        ("a-only.example", Verdict.DELIVERABLE),  # no MX: the A record is the implicit MX
        ("aaaa-only.example", Verdict.DELIVERABLE),
        ("nullmx.example", Verdict.UNDELIVERABLE),  # RFC 7505
        ("nothing.example", Verdict.UNDELIVERABLE),  # exists, but neither MX nor A/AAAA
        ("no-such-domain.example", Verdict.UNDELIVERABLE),  # NXDOMAIN
        ("servfail.example", Verdict.UNKNOWN),
        ("slow.example", Verdict.UNKNOWN),
    ],
)
async def test_verdicts(dns_server: Dns, domain: str, verdict: Verdict) -> None:
    assert await checker(dns_server, timeout=0.5).verdict(domain) is verdict


async def test_the_big_providers_are_never_looked_up(dns_server: Dns) -> None:
    check = checker(dns_server)
    assert await check.verdict("gmail.com") is Verdict.DELIVERABLE
    assert await check.verdict("qq.com") is Verdict.DELIVERABLE
    assert dns_server.zone.questions == []


async def test_verdicts_are_cached_an_hour_when_deliverable_ten_minutes_when_not(dns_server: Dns) -> None:
    clock = FakeClock()
    check = checker(dns_server, clock)
    for _ in range(3):
        assert await check.verdict("good.example") is Verdict.DELIVERABLE
        assert await check.verdict("nullmx.example") is Verdict.UNDELIVERABLE
    assert dns_server.zone.asked("good.example") == ["MX"]
    assert dns_server.zone.asked("nullmx.example") == ["MX"]
    clock.advance(601)
    await check.verdict("good.example")
    await check.verdict("nullmx.example")
    assert dns_server.zone.asked("good.example") == ["MX"]
    assert dns_server.zone.asked("nullmx.example") == ["MX", "MX"]
    clock.advance(3000)
    await check.verdict("good.example")
    assert dns_server.zone.asked("good.example") == ["MX", "MX"]


async def test_failures_are_not_cached(dns_server: Dns) -> None:
    check = checker(dns_server)
    for _ in range(2):
        assert await check.verdict("servfail.example") is Verdict.UNKNOWN
    assert len(dns_server.zone.asked("servfail.example")) >= 2


async def test_concurrent_checks_of_one_new_domain_share_one_lookup(dns_server: Dns) -> None:
    check = checker(dns_server)
    verdicts = await asyncio.gather(*(check.verdict("a-only.example") for _ in range(50)))
    assert set(verdicts) == {Verdict.DELIVERABLE}
    assert dns_server.zone.asked("a-only.example") == ["MX", "A"]


# --- through the API --------------------------------------------------------------------------


@pytest.fixture
def dns_settings(make_settings: Callable[..., Settings], dns_server: Dns) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "check_deliverability": "true",
            "dns_nameservers": [dns_server.nameserver],
            "dns_timeout": 0.5,
            "conversion_min_sends": 1_000_000,
            "throttle_rates": {"otp_send": "100/minute"},
        }
        return make_settings(**{**values, **overrides})

    return make


async def test_an_undeliverable_domain_is_refused_and_nothing_is_stored(
    open_app: Callable[..., Any], dns_settings: Callable[..., Settings], redis: Any, key_prefix: str
) -> None:
    async with open_app(dns_settings(worker_enabled=False)) as app:
        for domain in ("no-such-domain.example", "nullmx.example", "nothing.example"):
            res = await app.http.post("/api/v1/auth/otp/send", json={"email": f"someone@{domain}"})
            assert (res.status_code, res.json()["code"]) == (400, "undeliverable_email")
            assert res.headers["content-type"] == "application/problem+json"
        # No code, no cooldown, no daily or global count, nothing queued: only the rate logs.
        kinds = {k.decode().split(":")[2] for k in await redis.keys(f"{key_prefix}:*")}
        assert kinds <= {"ip", "jobs"}, kinds
        assert await redis.xlen(f"{key_prefix}:{{{key_prefix}}}:jobs") == 0
        ok = await app.http.post("/api/v1/auth/otp/send", json={"email": "someone@good.example"})
        assert ok.status_code == 202


async def test_dns_trouble_lets_the_send_through(
    open_app: Callable[..., Any], dns_settings: Callable[..., Settings]
) -> None:
    async with open_app(dns_settings()) as app:
        for domain in ("slow.example", "servfail.example"):
            res = await app.http.post("/api/v1/auth/otp/send", json={"email": unique_email(domain)})
            assert res.status_code == 202
        await drain(app)


async def test_refused_domains_count_against_the_rate(
    open_app: Callable[..., Any], dns_settings: Callable[..., Settings]
) -> None:
    async with open_app(dns_settings(throttle_rates={"otp_send": "2/minute"})) as app:
        for _ in range(2):
            res = await app.http.post("/api/v1/auth/otp/send", json={"email": "a@no-such-domain.example"})
            assert res.json()["code"] == "undeliverable_email"
        res = await app.http.post("/api/v1/auth/otp/send", json={"email": "a@good.example"})
        assert res.json()["code"] == "rate_limited"


async def test_auto_is_off_with_the_console_provider(
    open_app: Callable[..., Any], dns_settings: Callable[..., Settings], dns_server: Dns
) -> None:
    async with open_app(dns_settings(check_deliverability="auto")) as app:
        res = await app.http.post("/api/v1/auth/otp/send", json={"email": "a@no-such-domain.example"})
        assert res.status_code == 202
        await drain(app)
    assert dns_server.zone.questions == []


async def test_the_big_providers_are_not_looked_up_through_the_api(
    open_app: Callable[..., Any], dns_settings: Callable[..., Settings], dns_server: Dns
) -> None:
    async with open_app(dns_settings()) as app:
        for domain in ("gmail.com", "outlook.com", "qq.com"):
            assert (
                await app.http.post("/api/v1/auth/otp/send", json={"email": f"a@{domain}"})
            ).status_code == 202
        await drain(app)
    assert dns_server.zone.questions == []

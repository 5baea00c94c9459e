"""The sender check (CONTRACT §9, `otp-service doctor`) against a real DNS server on loopback
(dnslib) serving a good zone and broken ones, SES through a real moto_server (its v1 API gives
the DKIM tokens) and Resend through a local HTTP fake; timeouts and NXDOMAIN are failed checks."""

import contextlib
import json
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from aiobotocore.session import get_session
from dnslib import CNAME, QTYPE, RCODE, RR, TXT, DNSRecord
from dnslib.dns import DNSError
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer
from prometheus_client import REGISTRY

from otp_service.cli import main
from otp_service.delivery.providers.resend import ResendProvider
from otp_service.delivery.providers.ses import SesProvider
from otp_service.delivery.providers.smtp import SmtpProvider
from otp_service.sender.checks import Check
from otp_service.sender.dns import DnsReader
from otp_service.sender.doctor import Report, check_sender
from otp_service.sender.periodic import RETRY_FAILED, RUN_EVERY, SenderCheck
from otp_service.validation.deliverability import make_resolver
from tests.support import FakeClock, QuietHandler, ThreadedServer, free_port
from tests.test_delivery import moto_url  # noqa: F401  (the session's moto_server)

TOKENS = [  # the DKIM tokens moto's SES v1 API gives every domain
    "vvjuipp74whm76gqoni7qmwwn4w4qusjiainivf6sf",
    "3frqe7jn4obpuxjpwpolz6ipb3k5nvt2nhjpik2oy",
    "wrqplteh7oodxnad7hsl4mixg2uavzneazxv5sxi2",
]
SES_SPF = "v=spf1 include:amazonses.com ~all"
RESEND_KEY = "p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC1key"


def ses_zone(
    domain: str, *, spf: str | None = SES_SPF, dmarc_at: str | None = None, tokens: list[str] = TOKENS
) -> dict[str, list[Any]]:
    zone: dict[str, list[Any]] = {
        f"{t}._domainkey.{domain}": [CNAME(f"{t}.dkim.amazonses.com")] for t in tokens
    }
    if spf:
        zone[domain] = [TXT("google-site-verification=abc"), TXT(spf)]
    if dmarc_at:
        zone[f"_dmarc.{dmarc_at}"] = [TXT("v=DMARC1; p=none; rua=mailto:dmarc@" + dmarc_at)]
    return zone


ZONE: dict[str, list[Any]] = {
    **ses_zone("good.example", dmarc_at="good.example"),
    **ses_zone("nospf.example", spf=None, dmarc_at="nospf.example"),
    **ses_zone("otherspf.example", spf="v=spf1 include:_spf.google.com ~all", dmarc_at="otherspf.example"),
    **ses_zone("nested.example", spf="v=spf1 include:_spf.nested.example -all", dmarc_at="nested.example"),
    "_spf.nested.example": [TXT("v=spf1 ip4:192.0.2.0/24 include:amazonses.com ~all")],
    **ses_zone("nodmarc.example"),
    **ses_zone("subdmarc.example", dmarc_at="mail.subdmarc.example"),
    **ses_zone("nodkim.example", dmarc_at="nodkim.example", tokens=TOKENS[:2]),
    **ses_zone("unverified.example", dmarc_at="unverified.example"),
    **ses_zone("mail.parent.example", dmarc_at="parent.example"),
    # Resend: SPF and MX at send.<domain>, the DKIM key as a TXT record.
    "send.rs.example": [TXT(SES_SPF)],
    "resend._domainkey.rs.example": [TXT("v=DKIM1; k=rsa; " + RESEND_KEY)],
    "_dmarc.rs.example": [TXT("v=DMARC1; p=quarantine")],
    "send.rs-pending.example": [TXT(SES_SPF)],
    "resend._domainkey.rs-pending.example": [TXT(RESEND_KEY)],
    "_dmarc.rs-pending.example": [TXT("v=DMARC1; p=none")],
}
SES_DOMAINS = [
    "good.example", "nospf.example", "otherspf.example", "nested.example", "nodmarc.example",
    "subdmarc.example", "nodkim.example", "mail.parent.example", "slow.example", "nx.example",
]  # fmt: skip


class Zone(BaseResolver):  # type: ignore[misc]
    """Answers from ZONE, NXDOMAIN for any other name, nothing at all under slow.example."""

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        if name == "slow.example" or name.endswith(".slow.example"):
            raise DNSError("no answer")  # the server drops the question
        reply = request.reply()
        if name not in ZONE:
            reply.header.rcode = RCODE.NXDOMAIN
        for rdata in ZONE.get(name, []):
            if type(rdata).__name__ == qtype:
                reply.add_answer(RR(request.q.qname, QTYPE.reverse[qtype], rdata=rdata, ttl=60))
        return reply


@pytest.fixture(scope="module")
def nameserver() -> Iterator[str]:
    port = free_port()
    logger = DNSLogger("-recv,-send,-request,-reply,-truncated,-error,-data")
    server = DNSServer(Zone(), port=port, address="127.0.0.1", logger=logger)
    server.start_thread()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()
        server.server.server_close()


def reader(nameserver: str, timeout: float = 0.3) -> DnsReader:
    host, _, port = nameserver.rpartition(":")
    return DnsReader(make_resolver([(host, int(port))], timeout))


@pytest.fixture
async def ses(moto_url: str) -> Any:  # noqa: F811
    async with get_session().create_client("sesv2", region_name="us-east-1", endpoint_url=moto_url) as client:
        for domain in SES_DOMAINS:
            with contextlib.suppress(client.exceptions.AlreadyExistsException):
                await client.create_email_identity(EmailIdentity=domain)
        yield SesProvider(client, configuration_set=None)


class ResendFake(QuietHandler):
    """GET /domains and GET /domains/{id}, as https://resend.com/docs/api-reference/domains."""

    DOMAINS: ClassVar[dict[str, tuple[str, str]]] = {
        "d-rs": ("rs.example", "verified"),
        "d-pending": ("rs-pending.example", "pending"),
    }

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != "Bearer re_full":
            return self._answer(401, {"name": "restricted_api_key"})
        if self.path == "/domains":
            data = [{"id": i, "name": n, "status": s} for i, (n, s) in self.DOMAINS.items()]
            return self._answer(200, {"object": "list", "data": data})
        name, status = self.DOMAINS[self.path.removeprefix("/domains/")]
        records = [
            {"record": "SPF", "name": "send", "type": "MX", "value": "feedback-smtp.us-east-1.amazonses.com",
             "priority": 10, "status": status},
            {"record": "SPF", "name": "send", "type": "TXT", "value": SES_SPF, "status": status},
            {"record": "DKIM", "name": "resend._domainkey", "type": "TXT", "value": RESEND_KEY, "status": status},
        ]  # fmt: skip
        self._answer(200, {"object": "domain", "id": "x", "name": name, "status": status, "records": records})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        self.answer(status, json.dumps(body).encode())


@pytest.fixture(scope="module")
def resend_url() -> Iterator[str]:
    server = ThreadedServer()
    server.serve(ResendFake)
    try:
        yield server.url
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def resend(url: str, key: str = "re_full") -> Any:
    import httpx

    async with httpx.AsyncClient() as http:
        yield ResendProvider(http, api_url=url, api_key=key, timeout=2)


def failing(report: Report) -> set[str]:
    return {r.check.value for r in report.failed}


@pytest.mark.parametrize(
    ("domain", "fails"),
    [
        ("good.example", set()),
        ("nested.example", set()),  # SPF authorises SES through an include
        ("mail.parent.example", set()),  # DMARC at the organisational domain
        ("nospf.example", {"spf"}),
        ("otherspf.example", {"spf"}),  # SPF without the provider
        ("nodmarc.example", {"dmarc"}),
        ("subdmarc.example", {"dmarc"}),  # DMARC only on a subdomain
        ("nodkim.example", {"dkim", "alignment"}),
        ("unverified.example", {"dkim", "alignment", "verified"}),  # SES does not know it
        ("slow.example", {"dmarc", "spf", "dkim", "alignment"}),  # DNS never answers
        ("nx.example", {"dmarc", "spf", "dkim", "alignment"}),  # NXDOMAIN everywhere
    ],
)
async def test_ses_zones(ses: SesProvider, nameserver: str, domain: str, fails: set[str]) -> None:
    report = await check_sender(f"App <noreply@{domain}>", [ses], reader(nameserver))
    assert failing(report) == fails, report.results
    assert {r.check for r in report.results} == set(Check)


async def test_a_failure_says_what_to_publish(ses: SesProvider, nameserver: str) -> None:
    report = await check_sender("noreply@otherspf.example", [ses], reader(nameserver))
    [spf] = report.failed
    assert spf.publish == (
        'otherspf.example. TXT "v=spf1 include:_spf.google.com include:amazonses.com ~all"',
    )
    report = await check_sender("noreply@nodkim.example", [ses], reader(nameserver))
    dkim = next(r for r in report.failed if r.check is Check.DKIM)
    missing = f"{TOKENS[2]}._domainkey.nodkim.example"
    assert dkim.publish == (f"{missing}. CNAME {TOKENS[2]}.dkim.amazonses.com.",)
    assert dkim.detail == f"{missing}: no such name (NXDOMAIN)"
    report = await check_sender("noreply@subdmarc.example", [ses], reader(nameserver))
    assert report.failed[0].publish[0].startswith('_dmarc.subdmarc.example. TXT "v=DMARC1; p=none"')
    report = await check_sender("noreply@slow.example", [ses], reader(nameserver))
    assert "DNS did not answer within 0.3 s" in report.failed[0].detail


@pytest.mark.parametrize(("domain", "fails"), [("rs.example", set()), ("rs-pending.example", {"verified"})])
async def test_resend_zones(resend_url: str, nameserver: str, domain: str, fails: set[str]) -> None:
    async with resend(resend_url) as provider:
        report = await check_sender(f"noreply@{domain}", [provider], reader(nameserver))
    assert failing(report) == fails, report.results
    alignment = next(r for r in report.results if r.check is Check.ALIGNMENT)
    assert alignment.detail == f"DKIM d={domain} aligns with {domain}"
    if fails:
        assert f'send.{domain}. TXT "{SES_SPF}"' in report.failed[0].publish


async def test_a_provider_that_will_not_answer_fails_its_checks(resend_url: str, nameserver: str) -> None:
    async with resend(resend_url, key="re_sending_only") as provider:
        report = await check_sender("noreply@rs.example", [provider], reader(nameserver))
    assert failing(report) == {"spf", "dkim", "alignment", "verified"}
    assert "401 (a sending-only API key cannot read domains)" in report.failed[0].detail
    async with resend("http://127.0.0.1:9") as provider:  # nothing listens: connection refused
        report = await check_sender("noreply@rs.example", [provider], reader(nameserver))
    assert "ConnectError" in report.failed[0].detail


async def test_smtp_has_no_api_so_only_dns_is_checked(nameserver: str) -> None:
    smtp = SmtpProvider("smtp+insecure://127.0.0.1:25", timeout=1)
    report = await check_sender("noreply@good.example", [smtp], reader(nameserver))
    assert {(r.check.value, r.status.value) for r in report.results} == {
        ("dmarc", "pass"), ("spf", "pass"), ("dkim", "skip"), ("alignment", "skip"), ("verified", "skip"),
    }  # fmt: skip


def gauge(check: str, app: str = "") -> float | None:
    return REGISTRY.get_sample_value("otp_sender_check", {"check": check, "app": app})


async def test_the_worker_checks_at_start_then_every_six_hours(ses: SesProvider, nameserver: str) -> None:
    clock = FakeClock()
    good = SenderCheck(
        senders={"": "noreply@good.example"}, providers=[ses], dns=reader(nameserver), clock=clock
    )
    assert await good.run_if_due() is not None  # at start
    assert {c: gauge(c) for c in Check} == dict.fromkeys(Check, 1.0)
    assert await good.run_if_due() is None
    clock.now += RUN_EVERY
    assert await good.run_if_due() is not None
    broken = SenderCheck(
        senders={"": "noreply@nodkim.example"}, providers=[ses], dns=reader(nameserver), clock=clock
    )
    await broken.run_if_due()
    assert (gauge("dkim"), gauge("alignment"), gauge("spf")) == (0.0, 0.0, 1.0)
    clock.now += RETRY_FAILED - 1
    assert await broken.run_if_due() is None
    clock.now += 1  # a failing check is looked at again after half an hour
    assert await broken.run_if_due() is not None


async def test_the_worker_checks_each_applications_from_domain_once(
    ses: SesProvider, nameserver: str
) -> None:
    senders = {"": "Example <noreply@good.example>", "shop": "Shop <codes@nodkim.example>",
               "desk": "Desk <desk@good.example>", "admin": "noreply@good.example"}  # fmt: skip
    check = SenderCheck(senders=senders, providers=[ses], dns=reader(nameserver), clock=FakeClock())
    reports = await check.run_if_due()
    assert reports is not None
    assert sorted(reports) == ["good.example", "nodkim.example"]  # each domain asked once
    for app in ("", "desk", "admin"):
        assert {c: gauge(c, app) for c in Check} == dict.fromkeys(Check, 1.0), app
    assert (gauge("dkim", "shop"), gauge("alignment", "shop"), gauge("spf", "shop")) == (0.0, 0.0, 1.0)


def test_doctor_prints_each_check_and_exits_0_or_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], moto_url: str, nameserver: str,  # noqa: F811
    ses: SesProvider,
) -> None:  # fmt: skip
    monkeypatch.setenv("OTP_EMAIL_PROVIDER", "ses")
    monkeypatch.setenv("OTP_SES_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("OTP_DNS_NAMESERVERS", json.dumps([nameserver]))
    monkeypatch.setenv("OTP_DNS_TIMEOUT", "0.3")
    monkeypatch.setenv("OTP_EMAIL_FROM", "Example <noreply@good.example>")
    assert main(["doctor"]) == 0
    passed = capsys.readouterr().out
    monkeypatch.setenv("OTP_EMAIL_FROM", "Example <noreply@nodkim.example>")
    assert main(["doctor"]) == 1
    failed = capsys.readouterr().out
    print(passed + failed)  # shown with -s: the README's example
    assert passed.splitlines()[-1] == "all 5 checks passed"
    assert "FAIL  dkim       ses     " in failed
    assert failed.splitlines()[-1] == "2 of 5 checks failed"
    assert "fix the dkim check: ses signs as d=nodkim.example" in failed


def test_doctor_checks_an_applications_own_sender(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], moto_url: str, nameserver: str,  # noqa: F811
    ses: SesProvider,
) -> None:  # fmt: skip
    monkeypatch.setenv("OTP_EMAIL_PROVIDER", "ses")
    monkeypatch.setenv("OTP_SES_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("OTP_DNS_NAMESERVERS", json.dumps([nameserver]))
    monkeypatch.setenv("OTP_DNS_TIMEOUT", "0.3")
    monkeypatch.setenv("OTP_EMAIL_FROM", "Example <noreply@good.example>")
    apps = {"shop": {"email_from": "Shop <codes@nodkim.example>"}, "desk": {"brand_name": "Desk"}}
    monkeypatch.setenv("OTP_APPS", json.dumps(apps))
    assert main(["doctor"]) == 0  # the service-wide sender, as before
    assert capsys.readouterr().out.startswith("Sender check for Example <noreply@good.example>")
    assert main(["doctor", "--app", "shop"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(
        "Application shop\nSender check for Shop <codes@nodkim.example> (From domain nodkim.example)"
    )
    assert "FAIL  dkim       ses     " in out
    assert main(["doctor", "--app", "desk"]) == 0  # no email_from of its own: the service's
    assert "(From domain good.example)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main(["doctor", "--app", "nope"])
    assert exited.value.code == 2
    assert (
        capsys.readouterr().err == "otp-service: --app 'nope': no such application; configured: shop, desk\n"
    )


async def test_an_unexpected_exception_asking_the_provider_is_a_failed_check(nameserver: str) -> None:
    import httpx

    def broken(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a transport bug")

    async with httpx.AsyncClient(transport=httpx.MockTransport(broken)) as http:
        provider = ResendProvider(http, api_url="https://api.resend.test", api_key="re_full", timeout=2)
        report = await check_sender("noreply@rs.example", [provider], reader(nameserver))
    assert failing(report) == {"spf", "dkim", "alignment", "verified"}
    assert report.failed[0].detail == "resend: asking for the identity failed: RuntimeError"

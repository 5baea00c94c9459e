"""The "Didn't ask for this?" link (CONTRACT §2 OTP_PUBLIC_URL / OTP_NOT_ME_HOURS, §4): in both
parts of every email in every locale, its token sealed under a purpose of its own, naming the
send; the page the service serves (a strict CSP, nothing reported on load); and the report's
effects, each on Redis and on the embedded default where the rule lives in Lua."""

import asyncio
import base64
import hashlib
import html
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.exceptions import InvalidTag
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from otp_service.db.models import WebhookEvent
from otp_service.delivery.jobs import JobContent, JobSealer
from otp_service.delivery.not_me import TOKEN_MS, InvalidNotMeToken, NotMeLinks, NotMeSealer, NotMeToken
from otp_service.delivery.sender import Deliverer, Wording
from otp_service.sealing import Sealer
from otp_service.settings import Settings, SettingsError, load_settings
from tests.conftest import METRICS_AUTH
from tests.support import console_emails, drain, embedded_send_rate, unique_email
from tests.test_events_out import EVENTS_SECRET, Receiver
from tests.test_verify_link import Chromium

PUBLIC = "https://otp.example"
LINK = re.compile(r"https://otp\.example/not-me#t=([A-Za-z0-9_-]+)")
SECRET = b"s" * 32
JOB = JobContent("ann@example.org", "012345", "addr-id", "hash", "en", "203.0.113.0/24", "203.0.113.7")


def deliverer(**overrides: Any) -> Deliverer:
    settings = load_settings(public_url=PUBLIC, **overrides)
    return Deliverer(settings=settings, primary=None, fallback=None, send_rate=embedded_send_rate(14))  # type: ignore[arg-type]


def links(clock: float = 1_000.0) -> NotMeLinks:
    return NotMeLinks(NotMeSealer(Sealer(SECRET)), PUBLIC, clock=lambda: clock)


@pytest.mark.parametrize("locale", ["en", "zh-CN", "bilingual"])
@pytest.mark.parametrize("repeated", [False, True], ids=["fresh", "re-sent"])
def test_the_link_is_in_both_parts_in_every_locale(locale: Any, repeated: bool) -> None:
    wording = Wording(locale=locale, lifetime_seconds=200 if repeated else None, repeated=repeated)
    link = links().link("1-0", JOB)
    email = deliverer(not_me_hours=36).build("email_otp", "ann@example.org", "012345", "k", wording, link)
    english, chinese = locale in ("en", "bilingual"), locale in ("zh-CN", "bilingual")
    assert email.text.count(link) == english + chinese
    assert email.html.count(f'href="{html.escape(link)}"') == english + chinese
    assert ("Didn't ask for this?" in email.text) is english
    assert ("不是您本人申请的？" in email.text) is chinese
    assert ("for 36 hours" in email.text) is english
    assert ("36 小时" in email.html) is chinese
    # Each email's own token: a second send's link is another.
    other = links().link("2-0", JOB)
    again = deliverer().build("email_otp", "ann@example.org", "012345", "k", wording, other)
    assert other in again.text
    assert link not in again.text + again.html


def test_without_a_public_url_no_email_carries_the_link() -> None:
    plain = Deliverer(settings=load_settings(), primary=None, fallback=None, send_rate=embedded_send_rate(14))  # type: ignore[arg-type]
    email = plain.build("email_otp", "ann@example.org", "012345", "k")
    assert "not-me" not in email.text + email.html
    assert "Didn't ask" not in email.text


def test_the_token_names_the_send_and_expires_after_seven_days() -> None:
    link = links(clock=1_000.0).link("1700000000000-0", JOB)
    [token] = LINK.findall(link)
    opened = NotMeSealer(Sealer(SECRET)).open(token)
    assert opened == NotMeToken("1700000000000-0", "ann@example.org", "addr-id", "203.0.113.7", "203.0.113.0/24",
                                1_000_000 + TOKEN_MS)  # fmt: skip
    assert TOKEN_MS == 7 * 86_400_000


def test_the_token_opens_under_its_own_purpose_only() -> None:
    sealer = Sealer(SECRET)
    [token] = LINK.findall(links().link("1-0", JOB))
    # A token is no job, and a job is no token (sealing.py: the purpose is the AEAD's data).
    raw = base64.b64encode(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    with pytest.raises(InvalidTag):
        JobSealer(sealer).open(raw)
    job = JobSealer(sealer).seal(JobContent("ann@example.org", "012345", "a", "h"))
    job_as_token = base64.urlsafe_b64encode(base64.b64decode(job)).decode().rstrip("=")
    for bad in (job_as_token, token[:-2], token + "AA", "", "x" * 5000, "not a token", "ü"):
        with pytest.raises(InvalidNotMeToken):
            NotMeSealer(sealer).open(bad)
    with pytest.raises(InvalidNotMeToken):  # another OTP_SECRET_KEY
        NotMeSealer(Sealer(b"t" * 32)).open(token)


@pytest.mark.parametrize("url", ["http://otp.example", "https://", "otp.example", "https://otp.example/?a=1",
                                 "https://u:p@ss@otp.example"])  # fmt: skip
def test_a_public_url_that_is_not_an_https_base_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(public_url=url)
    assert "OTP_PUBLIC_URL" in str(refused.value)
    assert url not in str(refused.value)


def test_the_public_url_and_hours_are_read() -> None:
    s = load_settings(public_url="https://otp.example/base/", not_me_hours=48)
    assert (s.public_url, s.not_me_hours) == ("https://otp.example/base", 48)
    assert (load_settings().public_url, load_settings().not_me_hours) == (None, 24)
    with pytest.raises(SettingsError, match="OTP_NOT_ME_HOURS"):
        load_settings(not_me_hours=0)


# --- The report and its effects, through the HTTP API, on Redis and on the embedded store ---

SEND = "/api/v1/auth/otp/send"
VERIFY = "/api/v1/auth/otp/verify"
NOT_ME = "/api/v1/auth/otp/not-me"
LIMITS = "/api/v1/admin/limits"
ADMIN_KEY = "not-me-admin-key-0123456789abcdef0123"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
PROXY = "203.0.113.7"  # the test client's address: the trusted proxy
HOME = "198.51.100.23"  # the user's network, remembered once the user verified from it
WIDE = {"otp_send": "1000/minute", "otp_verify": "1000/minute", "otp_send_subnet": "1000/minute",
        "otp_verify_subnet": "1000/minute"}  # fmt: skip


def bomber() -> str:
    """A client of its own per test (the tests share one database: blame must not mix)."""
    return f"100.{secrets.randbelow(64) + 64}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def service_settings(make_settings: Callable[..., Settings], store: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "public_url": PUBLIC, "email_provider": "console", "admin_api_keys": [ADMIN_KEY],
        "trusted_proxies": [f"{PROXY}/32"], "throttle_rates": WIDE, "conversion_min_sends": 1_000_000,
        "rate_limit_ttl": 0, "not_me_hours": 5, **({"redis_url": None} if store == "embedded" else {}),
    }  # fmt: skip
    return make_settings(**{**values, **overrides})


@pytest.fixture(params=["redis", "embedded"])
async def app(
    request: pytest.FixtureRequest, open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> AsyncIterator[Any]:
    async with open_app(service_settings(make_settings, request.param)) as client:
        yield client


async def post(app: Any, path: str, body: dict[str, str], ip: str) -> Any:
    return await app.http.post(path, json=body, headers={"x-forwarded-for": ip})


async def emailed(app: Any, capsys: pytest.CaptureFixture[str]) -> list[tuple[str, str]]:
    """(code, not-me token) of each email the console printed since the last call."""
    await drain(app)
    out = capsys.readouterr().out
    emails = console_emails(out)
    tokens = list(dict.fromkeys(LINK.findall(out)))  # each email's one link, in both parts and languages
    assert len(tokens) == len(emails)
    return [(e.code, t) for e, t in zip(emails, tokens, strict=True)]


async def limits(app: Any, email: str, ip: str) -> dict[str, Any]:
    res = await app.http.get(LIMITS, params={"email": email, "ip": ip}, headers=ADMIN)
    assert res.status_code == 200, res.text
    found: dict[str, Any] = res.json()
    return found


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_after_a_report_only_remembered_sources_receive_codes(
    app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    email, attacker = unique_email(), bomber()
    # The user signed in from home before: home is a remembered source.
    assert (await post(app, SEND, {"email": email}, HOME)).status_code == 202
    [(code, _)] = await emailed(app, capsys)
    assert (await post(app, VERIFY, {"email": email, "code": code}, HOME)).status_code == 200
    # Someone else feeds the address into a sign-up form; the owner reports that email.
    assert (await post(app, SEND, {"email": email}, attacker)).status_code == 202
    [(_, token)] = await emailed(app, capsys)
    before = await limits(app, email, attacker)
    assert (before["address"]["reported_for"], before["would_withhold"]) == (0, False)
    reported, withheld = (
        sample("otp_not_me_total", event="reported"),
        sample("otp_not_me_total", event="withheld"),
    )
    assert (await post(app, NOT_ME, {"token": token}, PROXY)).status_code == 204
    assert sample("otp_not_me_total", event="reported") == reported + 1
    # The address now receives nothing from elsewhere, which gets the usual 202 and counts.
    for ip in (attacker, bomber()):
        res = await post(app, SEND, {"email": email}, ip)
        answer = res.json()
        assert answer.pop("send_id")
        assert (res.status_code, answer) == (202, {"status": "pending", "expires_in": 300, "resend_after": 0})
    assert await emailed(app, capsys) == []
    assert sample("otp_not_me_total", event="withheld") == withheld + 2
    looked_up = await limits(app, email, attacker)
    assert 5 * 3600 - 5 <= looked_up["address"]["reported_for"] <= 5 * 3600
    assert (looked_up["would_refuse"], looked_up["would_withhold"]) == (None, True)
    assert looked_up["address"]["daily"]["count"] == before["address"]["daily"]["count"] + 2  # counted as any
    assert (await limits(app, email, HOME))["would_withhold"] is False
    # Home still receives its codes, and they verify.
    assert (await post(app, SEND, {"email": email}, HOME)).status_code == 202
    [(code, _)] = await emailed(app, capsys)
    assert (await post(app, VERIFY, {"email": email, "code": code}, HOME)).status_code == 200
    # /metrics shows the reports.
    text = (await app.http.get("/metrics", headers=METRICS_AUTH)).text
    assert 'otp_not_me_total{event="reported"}' in text


async def test_the_requesting_client_gets_one_reputation_event_and_no_provider_rate_moves(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    attacker = bomber()
    settings = service_settings(make_settings, "redis", reputation_source_limit=2)
    async with open_app(settings) as app:
        tokens = []
        for _ in range(2):
            assert (await post(app, SEND, {"email": unique_email()}, attacker)).status_code == 202
            [(_, token)] = await emailed(app, capsys)
            tokens.append(token)
        cidr = f"{attacker}/32"

        async def blocked() -> list[dict[str, Any]]:
            await app.web.reputation.check()
            items = (await app.http.get("/api/v1/admin/blocks", headers=ADMIN)).json()["items"]
            return [b for b in items if b["source"] == cidr]

        assert (await post(app, NOT_ME, {"token": tokens[0]}, PROXY)).status_code == 204
        assert await blocked() == []  # one event of the two the limit needs
        assert (await post(app, NOT_ME, {"token": tokens[1]}, PROXY)).status_code == 204
        [block] = await blocked()
        assert (block["kind"], block["events"]) == ("client", 2)
        refused = await post(app, SEND, {"email": unique_email()}, attacker)
        assert refused.json()["code"] == "rate_limited"
        # A report is no bounce and no complaint: no provider's rates count it.
        [health] = await app.web.reputation.report()
        assert (health.evidence.bounces, health.evidence.complaints) == (0, 0)
        await app.web.reputation.lift(cidr)


async def test_a_report_goes_out_as_otp_reported(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        settings = service_settings(make_settings, "redis", events_webhook_url=receiver.url,
                                    events_webhook_secret=EVENTS_SECRET)  # fmt: skip
        async with open_app(settings) as app:
            email = unique_email()
            assert (await post(app, SEND, {"email": email}, bomber())).status_code == 202
            [(_, token)] = await emailed(app, capsys)
            await receiver.wait_for(1)  # otp.sent
            assert (await post(app, NOT_ME, {"token": token}, PROXY)).status_code == 204
            events = await receiver.wait_for(2)
    finally:
        await receiver.stop()
    sent, reported = events
    assert reported["type"] == "otp.reported"
    assert reported["data"]["email"] == email
    assert reported["data"]["job_id"] == sent["data"]["job_id"]
    assert reported["data"]["message_id"] == sent["data"]["message_id"]
    assert reported["data"]["send_id"] == sent["data"]["send_id"] is not None


async def test_a_bad_expired_or_reused_token_is_invalid_and_changes_nothing(
    app: Any, make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    email, attacker = unique_email(), bomber()
    assert (await post(app, SEND, {"email": email}, attacker)).status_code == 202
    [(_, token)] = await emailed(app, capsys)
    opened = app.web.not_me._tokens.open(token)
    job_id = opened.job_id
    sealer = app.web.not_me._tokens  # the service's own key: only the expiry is wrong
    expired = sealer.seal(
        NotMeToken(job_id, email, opened.address_id, attacker, None, int(time.time() * 1000) - 1)
    )
    other_key = NotMeSealer(Sealer(b"another-secret-key-0123456789")).seal(
        NotMeToken(job_id, email, opened.address_id, attacker, None, int(time.time() * 1000) + TOKEN_MS)
    )
    invalid = sample("otp_not_me_total", event="invalid_token")
    for bad in (
        expired,
        other_key,
        token[:-3],
        token[:40] + ("A" if token[40] != "A" else "B") + token[41:],
        "x",
    ):
        res = await post(app, NOT_ME, {"token": bad}, PROXY)
        assert (res.status_code, res.json()["code"]) == (400, "invalid_token")
    assert sample("otp_not_me_total", event="invalid_token") == invalid + 5
    assert (await limits(app, email, attacker))["address"]["reported_for"] == 0
    assert await reports_of(app, job_id) == 0
    # The real token works once; used again it changes nothing either.
    assert (await post(app, NOT_ME, {"token": token}, PROXY)).status_code == 204
    held = (await limits(app, email, attacker))["address"]["reported_for"]
    again = await post(app, NOT_ME, {"token": token}, PROXY)
    assert (again.status_code, again.json()["code"]) == (400, "invalid_token")
    assert await reports_of(app, job_id) == 1
    assert (await limits(app, email, attacker))["address"]["reported_for"] <= held
    # Malformed bodies are the usual 422.
    assert (await app.http.post(NOT_ME, json={})).status_code == 422


async def reports_of(app: Any, job_id: str) -> int:
    async with app.db.connect() as conn:
        count = await conn.scalar(
            select(func.count(WebhookEvent.id)).where(
                WebhookEvent.provider == "not-me", WebhookEvent.event_id == job_id
            )
        )
    return int(count or 0)


async def test_the_page_is_self_contained_under_a_strict_policy(app: Any) -> None:
    res = await app.http.get("/not-me")
    assert res.status_code == 200
    assert res.headers["content-type"].startswith("text/html")
    policy = dict(part.strip().split(" ", 1) for part in res.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'"
    assert (policy["connect-src"], policy["base-uri"], policy["form-action"], policy["frame-ancestors"]) == (
        "'self'", "'none'", "'none'", "'none'")  # fmt: skip
    [script] = re.findall(r"<script>(.*?)</script>", res.text, re.S)
    [style] = re.findall(r"<style>(.*?)</style>", res.text, re.S)
    for source, directive in ((script, "script-src"), (style, "style-src")):
        digest = base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()
        assert policy[directive] == f"'sha256-{digest}'"
    assert not re.search(r"\b(src|href)=", res.text)  # loads nothing from anywhere
    assert res.headers["referrer-policy"] == "no-referrer"


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="chromium is not installed (apt-get install chromium)"
)
async def test_opening_the_link_reports_nothing_until_the_button_is_pressed(
    app: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The service's page, behind a local origin standing in for OTP_PUBLIC_URL (aiohttp passing
    GET /not-me and the POST to the service with their headers, CSP included, as a reverse proxy
    would). Chromium opens the delivered link: first as a link scanner does (loads, runs the
    scripts, presses nothing), which must change nothing; then as the person does."""
    email, attacker = unique_email(), bomber()
    assert (await post(app, SEND, {"email": email}, attacker)).status_code == 202
    [(_, token)] = await emailed(app, capsys)
    posted: list[int] = []

    async def page(request: web.Request) -> web.Response:
        res = await app.http.get("/not-me")
        headers = {
            k: v for k, v in res.headers.items() if k.lower() not in ("content-length", "content-type")
        }
        return web.Response(text=res.text, content_type="text/html", headers=headers)

    async def report(request: web.Request) -> web.Response:
        res = await app.http.post(NOT_ME, content=await request.read(),
                                  headers={"content-type": request.headers.get("content-type", "")})  # fmt: skip
        posted.append(res.status_code)
        return web.Response(body=res.content, status=res.status_code)

    site = web.Application()
    site.router.add_get("/not-me", page)
    site.router.add_post(NOT_ME, report)
    runner = web.AppRunner(site, access_log=None)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    local = f"http://127.0.0.1:{port}/not-me#t={token}"
    try:
        async with Chromium.launch(tmp_path / "chrome") as chromium:
            scanner = await chromium.open(local)
            await asyncio.sleep(2)  # its scripts have run; a scanner presses nothing
            assert posted == []
            shown = "[document.querySelectorAll('button:not([hidden])').length, document.body.innerText]"
            buttons, text = await chromium.evaluate(scanner, shown)
            assert buttons == 1  # the script ran (its hash is allowed) and shows the one button
            assert "Didn't ask for this?" in text
            assert (await limits(app, email, attacker))["address"]["reported_for"] == 0
            info = await chromium.call("Target.getTargetInfo", scanner)
            await chromium.call("Target.closeTarget", targetId=info["targetInfo"]["targetId"])

            person = await chromium.open(local)
            await chromium.press(person, "#go")
            await chromium.until(
                person, "document.getElementById('status').textContent.startsWith('Thank you')"
            )
    finally:
        await runner.cleanup()
    assert posted == [204]
    assert (await limits(app, email, attacker))["address"]["reported_for"] > 0

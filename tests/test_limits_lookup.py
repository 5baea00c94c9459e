"""GET /api/v1/admin/limits, "why was this refused?" (CONTRACT §3), on Redis and on the embedded
default: each figure it gives is compared with what the next send does, and reading it changes
nothing."""

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from otp_service.settings import Settings
from tests.support import console_emails, drain, unique_email
from tests.test_captcha import Siteverify, siteverify  # noqa: F401 - the fake siteverify fixture

SEND, VERIFY, LIMITS = "/api/v1/auth/otp/send", "/api/v1/auth/otp/verify", "/api/v1/admin/limits"
KEY = "limits-admin-key-0123456789-0123456789-0"
ADMIN = {"authorization": f"Bearer {KEY}"}
PROXY = "203.0.113.7"
HOME, ELSEWHERE = "198.51.100.20", "192.0.2.77"


def settings_for(make_settings: Callable[..., Settings], tmp_path: Path, store: dict[str, Any],
                 **overrides: Any) -> Settings:  # fmt: skip
    if store:
        store = {**store, "database_url": f"sqlite+aiosqlite:///{tmp_path / 'otp.db'}"}
    values: dict[str, Any] = {"admin_api_keys": [KEY], "trusted_proxies": [f"{PROXY}/32"],
                              "conversion_min_sends": 1_000_000, **store}  # fmt: skip
    return make_settings(**{**values, **overrides})


@pytest.fixture(params=[{}, {"redis_url": None}], ids=["redis", "embedded"])
def store(request: pytest.FixtureRequest) -> dict[str, Any]:
    return dict(request.param)


@pytest.fixture
async def app(
    open_app: Callable[..., Any],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    store: dict[str, Any],
) -> AsyncIterator[Any]:
    async with open_app(settings_for(make_settings, tmp_path, store)) as client:
        yield client


async def limits(app: Any, **params: str) -> dict[str, Any]:
    res = await app.http.get(LIMITS, params=params, headers=ADMIN)
    assert res.status_code == 200, res.text
    body: dict[str, Any] = res.json()
    return body


async def send(app: Any, email: str, ip: str) -> Any:
    return await app.http.post(SEND, json={"email": email}, headers={"x-forwarded-for": ip})


async def test_a_fresh_address_and_ip_would_be_accepted_then_the_cooldown_is_shown(app: Any) -> None:
    email = unique_email()
    before = await limits(app, email=email, ip=HOME)
    assert before["would_refuse"] is None
    assert before["address"]["mailbox"] == email
    assert (before["address"]["daily"]["count"], before["address"]["cooldown_remaining"]) == (0, 0)
    assert (await send(app, email, HOME)).status_code == 202
    after = await limits(app, email=email, ip=ELSEWHERE)
    assert after["global_daily"]["count"] >= 1
    assert after["global_daily"]["retry_after"] == 0  # far from the cap
    assert after["address"]["daily"] == {"count": 1, "limit": 10, "retry_after": 0}
    assert 59 <= after["address"]["cooldown_remaining"] <= 60
    assert 290 <= after["address"]["code_expires_in"] <= 300
    assert after["would_refuse"] == "cooldown"
    refused = await send(app, email, ELSEWHERE)
    assert (refused.status_code, refused.json()["code"]) == (429, "cooldown")
    assert abs(int(refused.headers["retry-after"]) - after["retry_after"]) <= 1


async def test_the_client_and_subnet_rates(app: Any) -> None:
    for _ in range(3):  # otp_send: 3/minute per client
        assert (await send(app, unique_email(), HOME)).status_code == 202
    report = await limits(app, ip=HOME)
    assert report["address"] is None
    client = report["client"]
    assert (client["client"], client["subnet"]) == (HOME, "198.51.100.0/24")
    assert client["client_rate"]["count"] == 3
    assert client["client_rate"]["limit"] == 3
    assert 55 <= client["client_rate"]["retry_after"] <= 60
    assert client["subnet_rate"]["count"] == 3
    assert client["subnet_rate"]["retry_after"] == 0
    assert report["would_refuse"] == "rate_limited"
    refused = await send(app, unique_email(), HOME)
    assert (refused.status_code, refused.json()["code"]) == (429, "rate_limited")
    assert abs(int(refused.headers["retry-after"]) - report["retry_after"]) <= 1
    # Another client of the same /24 shares only the subnet's count.
    neighbour = await limits(app, ip="198.51.100.21")
    assert (neighbour["client"]["client_rate"]["count"], neighbour["client"]["subnet_rate"]["count"]) == (
        0,
        3,
    )
    assert neighbour["would_refuse"] is None


async def test_the_daily_cap_across_spellings_and_the_domain_cap(
    open_app: Callable[..., Any],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    store: dict[str, Any],
) -> None:
    wide = {"otp_send": "100/minute", "otp_send_subnet": "100/minute"}
    settings = settings_for(make_settings, tmp_path, store, rate_limit_ttl=0, throttle_rates=wide,
                            domain_daily_limit=12)  # fmt: skip
    async with open_app(settings) as app:
        local = unique_email("x").split("@")[0].replace(".", "")
        for n in range(10):  # ten spellings of one gmail inbox: its daily cap
            assert (await send(app, f"{local}+{n}@googlemail.com", HOME)).status_code == 202
        report = await limits(app, email=f"{local[:3]}.{local[3:]}@gmail.com", ip=HOME)
        assert report["address"]["mailbox"] == f"{local}@gmail.com"
        assert report["address"]["daily"]["count"] == 10
        assert report["address"]["domain"] is None  # gmail.com: a shared provider, exempt
        assert report["would_refuse"] == "daily_limit"
        refused = await send(app, f"{local}@gmail.com", HOME)
        assert (refused.status_code, refused.json()["code"]) == (429, "daily_limit")
        assert abs(int(refused.headers["retry-after"]) - report["address"]["daily"]["retry_after"]) <= 1

        for _ in range(12):
            assert (await send(app, unique_email("corp.example.co.uk"), HOME)).status_code == 202
        report = await limits(app, email="new@mail.corp.example.co.uk")
        assert report["address"]["domain"] == "example.co.uk"
        domain = report["address"]["domain_daily"]
        assert (domain["count"], domain["limit"]) == (12, 12)
        assert 86_300 < domain["retry_after"] <= 86_400
        assert report["would_refuse"] == "domain_limit"
        refused = await send(app, "new@mail.corp.example.co.uk", ELSEWHERE)
        assert (refused.status_code, refused.json()["code"]) == (429, "domain_limit")
        assert abs(int(refused.headers["retry-after"]) - report["retry_after"]) <= 1


async def test_remembered_sources_and_suppression(app: Any, capsys: pytest.CaptureFixture[str]) -> None:
    email = unique_email()
    assert (await send(app, email, HOME)).status_code == 202
    await drain(app)
    [sent] = console_emails(capsys.readouterr().out)
    ok = await app.http.post(
        VERIFY, json={"email": email, "code": sent.code}, headers={"x-forwarded-for": HOME}
    )
    assert ok.status_code == 200
    # The first send (home, not yet remembered) started the cooldown everyone else shares.
    home = await limits(app, email=email, ip=HOME)
    assert (home["address"]["remembered_sources"], home["client"]["remembered_source"]) == (1, True)
    assert home["address"]["cooldown_remaining"] > 0
    assert home["address"]["remembered_cooldown_remaining"] == 0
    assert home["would_refuse"] is None  # home has its own cooldown
    elsewhere = await limits(app, email=email, ip=ELSEWHERE)
    assert (elsewhere["client"]["remembered_source"], elsewhere["would_refuse"]) == (False, "cooldown")
    again = await send(app, email, HOME)
    assert again.status_code == 202, again.text
    assert (await send(app, email, ELSEWHERE)).json()["code"] == "cooldown"

    put = await app.http.put(f"/api/v1/admin/suppressions/{email}", json={"reason": "manual"}, headers=ADMIN)
    assert put.status_code == 201
    report = await limits(app, email=email.upper())
    assert (report["address"]["suppressed"], report["address"]["suppression_reason"]) == (True, "manual")


async def test_the_address_check_comes_first(app: Any) -> None:
    report = await limits(app, email="someone@mailinator.com", ip=HOME)
    assert (report["address"]["address_check"], report["would_refuse"]) == (
        "disposable_email",
        "disposable_email",
    )
    assert (await send(app, "someone@mailinator.com", HOME)).json()["code"] == "disposable_email"


async def test_bad_questions_are_422_and_admins_only(app: Any) -> None:
    assert (await app.http.get(LIMITS, params={"ip": HOME})).status_code == 401
    # An address with a control character (a NUL, which PostgreSQL refuses in text: schemathesis).
    for params in (
        {},
        {"ip": "not-an-ip"},
        {"ip": ""},
        {"email": "a\x00b@example.org"},
        {"email": "a\nb@x.org"},
    ):
        res = await app.http.get(LIMITS, params=params, headers=ADMIN)
        assert (res.status_code, res.json()["code"]) == (422, "invalid_request"), params


async def test_reading_changes_nothing_in_redis(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path, redis: Redis,
    key_prefix: str,
) -> None:  # fmt: skip
    # No worker: its consumer and heartbeat would write while we look.
    async with open_app(settings_for(make_settings, tmp_path, {}, worker_enabled=False)) as app:
        email = unique_email()
        for ip in (HOME, HOME, ELSEWHERE):
            await send(app, email if ip == HOME else unique_email(), ip)

        async def snapshot() -> dict[bytes, tuple[bytes | None, bool]]:
            """Every key's value, and whether it still has a TTL (a write would reset or drop it)."""
            keys = [k async for k in redis.scan_iter(match=f"{key_prefix}*", count=1000)]
            return {k: (await redis.dump(k), await redis.pttl(k) > 0) for k in keys}

        before = await snapshot()
        for params in (
            {"email": email, "ip": HOME},
            {"email": unique_email(), "ip": "2001:db8::1"},
            {"ip": ELSEWHERE},
        ):
            await limits(app, **params)
        assert await snapshot() == before


async def test_the_global_cap(
    open_app: Callable[..., Any],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    store: dict[str, Any],
) -> None:
    settings = settings_for(
        make_settings, tmp_path, store, global_daily_limits={"email": 2}, global_reserve=0
    )
    async with open_app(settings) as app:
        for _ in range(2):
            assert (await send(app, unique_email(), HOME)).status_code == 202
        report = await limits(app, email=unique_email(), ip=ELSEWHERE)
        assert (report["global_daily"]["count"], report["global_daily"]["limit"]) == (2, 2)
        assert report["would_refuse"] == "global_limit"
        assert 86_300 < report["retry_after"] <= 86_400
        refused = await send(app, unique_email(), ELSEWHERE)
        assert (refused.status_code, refused.json()["code"]) == (503, "global_limit")
        assert abs(int(refused.headers["retry-after"]) - report["retry_after"]) <= 1


# Every refusal a send can give, set up through the API (or, for the reputation guard's block and
# a pause, through the state the guard itself writes), then the look-up's answer held against the
# send that follows: the same code and the same Retry-After. The look-up runs the send decision
# itself (otp/lua/_decide.lua) read-only, so these cannot drift apart.
WIDE = {"otp_send": "100/minute", "otp_send_subnet": "100/minute"}
CORP = "corp.example.co.uk"


async def _cooldown(app: Any, email: str) -> None:
    assert (await send(app, email, HOME)).status_code == 202


async def _daily(app: Any, email: str) -> None:
    for _ in range(10):
        assert (await send(app, email, HOME)).status_code == 202


async def _domain(app: Any, email: str) -> None:
    for _ in range(2):
        assert (await send(app, unique_email(CORP), HOME)).status_code == 202


async def _global(app: Any, email: str) -> None:
    for _ in range(2):
        assert (await send(app, unique_email(), HOME)).status_code == 202


async def _client_rate(app: Any, email: str) -> None:
    for _ in range(3):  # otp_send: 3/minute per client
        assert (await send(app, unique_email(), ELSEWHERE)).status_code == 202


async def _subnet_rate(app: Any, email: str) -> None:
    for neighbour in ("192.0.2.1", "192.0.2.2"):  # ELSEWHERE's /24
        assert (await send(app, unique_email(), neighbour)).status_code == 202


async def _guard(app: Any, email: str) -> None:
    for neighbour in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):  # three codes, none verified
        res = await send(app, unique_email(), neighbour)
        assert res.status_code in (202, 429), res.text


async def _blocked(app: Any, email: str) -> None:
    # What the reputation guard writes when it blocks a subnet (delivery/reputation.py).
    assert await app.web.reputation._pauses.block_source("192.0.2.0/24", 3_600_000)


async def _paused(app: Any, email: str) -> None:
    await app.web.reputation._pauses.set_sending_paused(True)  # no healthy provider left


async def _captcha(app: Any, email: str) -> None:
    for _ in range(2):  # half the service-wide cap of 4: under attack
        assert (await send(app, unique_email(), HOME)).status_code == 202


REFUSALS: dict[str, tuple[dict[str, Any], Callable[[Any, str], Any], int, int]] = {
    # case: (settings, set-up, status, the least Retry-After expected in seconds)
    "cooldown": ({}, _cooldown, 429, 50),
    "daily_limit": ({"rate_limit_ttl": 0, "throttle_rates": WIDE}, _daily, 429, 86_000),
    "domain_limit": ({"domain_daily_limit": 2, "throttle_rates": WIDE}, _domain, 429, 86_000),
    "global_limit": ({"global_daily_limits": {"email": 2}, "global_reserve": 0}, _global, 503, 86_000),
    "rate_limited by the client": ({}, _client_rate, 429, 50),
    "rate_limited by the subnet": (
        {"throttle_rates": {"otp_send": "10/minute", "otp_send_subnet": "2/minute"}},
        _subnet_rate,
        429,
        50,
    ),
    "rate_limited by the conversion guard": (
        {
            "conversion_min_sends": 2,
            "conversion_min_ratio": 0.5,
            "conversion_guard_rate": "2/hour",
            "throttle_rates": WIDE,
        },
        _guard,
        429,
        3_500,
    ),
    "rate_limited by a reputation block": ({}, _blocked, 429, 3_500),
    "sending_paused": ({}, _paused, 503, 299),
    "captcha_required": ({"captcha_mode": "adaptive", "global_daily_limits": {"email": 4}}, _captcha, 400, 0),
}


@pytest.mark.parametrize("case", REFUSALS)
async def test_the_lookup_names_the_next_sends_refusal_and_its_wait(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path, store: dict[str, Any],
    request: pytest.FixtureRequest, case: str,
) -> None:  # fmt: skip
    overrides, set_up, status, least_wait = REFUSALS[case]
    fake: Siteverify = request.getfixturevalue("siteverify")
    captcha = {
        "captcha_provider": "turnstile",
        "captcha_secret": "s3cret",
        "captcha_verify_url": fake.url,
    }
    settings = settings_for(make_settings, tmp_path, store, worker_enabled=False,
                            **({**captcha, **overrides} if "captcha_mode" in overrides else overrides))  # fmt: skip
    code = case.split()[0]
    async with open_app(settings) as app:
        email = unique_email(CORP)
        await set_up(app, email)
        report = await limits(app, email=email, ip=ELSEWHERE)
        assert report["would_refuse"] == code, report
        assert report["retry_after"] >= least_wait, report
        refused = await send(app, email, ELSEWHERE)
        assert (refused.status_code, refused.json()["code"]) == (status, code), refused.text
        assert abs(int(refused.headers.get("retry-after", 0)) - report["retry_after"]) <= 1
        assert fake.posts == []  # nobody sent a token


async def test_a_blocked_client_over_its_rate_is_told_to_wait_for_the_block(app: Any) -> None:
    """Over its rate and blocked: the Retry-After is the block's, not the rate's minute (a client
    told a minute is refused again at once; found from outside)."""
    for _ in range(3):  # otp_send: 3/minute per client
        assert (await send(app, unique_email(), ELSEWHERE)).status_code == 202
    assert await app.web.reputation._pauses.block_source("192.0.2.0/24", 3_600_000)
    report = await limits(app, ip=ELSEWHERE)
    assert (report["would_refuse"], report["client"]["subnet_blocked_for"] > 3_500) == ("rate_limited", True)
    assert report["retry_after"] > 3_500
    refused = await send(app, unique_email(), ELSEWHERE)
    assert (refused.status_code, refused.json()["code"]) == (429, "rate_limited")
    assert abs(int(refused.headers["retry-after"]) - report["retry_after"]) <= 1

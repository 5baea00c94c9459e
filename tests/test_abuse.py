"""Issue 12, through the HTTP API on Redis and PostgreSQL: clients are IPv4 addresses or IPv6
/64s, subnets have budgets of their own, every request counts (malformed ones too), every
X-Forwarded-For line is read, and subnets whose codes are rarely verified are slowed."""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from otp_service.settings import Settings
from tests.support import console_emails, drain, unique_email

SEND = "/api/v1/auth/otp/send"
VERIFY = "/api/v1/auth/otp/verify"
PROXY = "203.0.113.7"  # the test transport's peer, trusted below


@pytest.fixture(params=["redis", "memory"])
def store(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Every case runs on the Redis stores and on the in-process ones (the embedded default)."""
    return {} if request.param == "redis" else {"redis_url": None}


@pytest.fixture
async def proxied(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], store: dict[str, Any]
) -> AsyncIterator[Any]:
    """The service behind a trusted proxy, with the contract's default rates; the low-conversion
    guard (which 20 unverified sends from one subnet would wake) is tested on its own below."""
    settings = make_settings(trusted_proxies=[f"{PROXY}/32"], conversion_min_sends=1_000_000, **store)
    async with open_app(settings, client_ip=PROXY) as app:
        yield app


async def send_from(app: Any, ip: str, email: str | None = None) -> Any:
    return await app.http.post(SEND, json={"email": email or unique_email()}, headers={"x-forwarded-for": ip})


async def test_one_ipv6_64_is_one_client(proxied: Any) -> None:
    """The attack the issue reports: 40 sends from 40 addresses of one /64, now 3 (3/minute)."""
    results = await asyncio.gather(*(send_from(proxied, f"2001:db8:7:7::{i:x}") for i in range(1, 41)))
    statuses = [r.status_code for r in results]
    assert statuses.count(202) == 3
    assert {r.json()["code"] for r in results if r.status_code == 429} == {"rate_limited"}


async def test_one_ipv4_24_shares_the_subnet_budget(proxied: Any) -> None:
    """40 sends from 40 addresses of one /24: the subnet's 30/minute holds; the next /24 is apart."""
    results = await asyncio.gather(*(send_from(proxied, f"198.51.100.{i}") for i in range(1, 41)))
    statuses = [r.status_code for r in results]
    assert statuses.count(202) == 30
    refused = next(r for r in results if r.status_code == 429)
    assert refused.json()["code"] == "rate_limited"
    assert refused.headers["retry-after"] == str(refused.json()["retry_after"])
    assert (await send_from(proxied, "198.51.101.1")).status_code == 202


async def test_an_ipv6_48_shares_the_subnet_budget(proxied: Any) -> None:
    results = await asyncio.gather(*(send_from(proxied, f"2001:db8:9:{i:x}::1") for i in range(1, 41)))
    assert [r.status_code for r in results].count(202) == 30


async def test_an_ipv4_mapped_address_is_that_ipv4_client(proxied: Any) -> None:
    for ip in ("192.0.2.44", "::ffff:192.0.2.44", "::ffff:c000:22c"):
        assert (await send_from(proxied, ip)).status_code == 202
    res = await send_from(proxied, "192.0.2.44")
    assert (res.status_code, res.json()["code"]) == (429, "rate_limited")


async def test_every_forwarded_for_line_is_read_so_a_forged_first_line_does_not_help(proxied: Any) -> None:
    """The client writes its own X-Forwarded-For line; the proxy appends a line of its own. The
    client is the proxy's last hop, whatever the forged line says."""
    statuses = []
    for i in range(5):
        headers = [("x-forwarded-for", f"6.6.6.{i}"), ("x-forwarded-for", "198.51.100.77")]
        res = await proxied.http.post(SEND, json={"email": unique_email()}, headers=headers)
        statuses.append(res.status_code)
    assert statuses == [202, 202, 202, 429, 429]


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"{not json", "application/json"),
        (b'{"mail": "a@example.org"}', "application/json"),
        (b"[]", "application/json"),
        (b"email=a@example.org", "application/x-www-form-urlencoded"),
    ],
)
async def test_malformed_sends_count_against_the_rates(
    proxied: Any, content: bytes, content_type: str
) -> None:
    headers = {"content-type": content_type, "x-forwarded-for": "192.0.2.80"}
    for _ in range(3):
        res = await proxied.http.post(SEND, content=content, headers=headers)
        assert (res.status_code, res.json()["code"]) == (422, "invalid_email")
    # The client's 3/minute is spent: a valid send and a fourth malformed one are both 429.
    assert (await send_from(proxied, "192.0.2.80")).json()["code"] == "rate_limited"
    res = await proxied.http.post(SEND, content=content, headers=headers)
    assert (res.status_code, res.json()["code"]) == (429, "rate_limited")


async def test_malformed_sends_count_against_the_subnet(proxied: Any) -> None:
    headers = {"content-type": "application/json"}
    for i in range(30):
        res = await proxied.http.post(
            SEND, content=b"{", headers={**headers, "x-forwarded-for": f"192.0.2.{i}"}
        )
        assert res.status_code == 422
    assert (await send_from(proxied, "192.0.2.200")).json()["code"] == "rate_limited"


async def test_a_malformed_verify_does_not_count_against_the_send_rate(proxied: Any) -> None:
    for _ in range(5):
        res = await proxied.http.post(VERIFY, content=b"{", headers={"x-forwarded-for": "192.0.2.90"})
        assert res.json()["code"] == "invalid_request"
    assert (await send_from(proxied, "192.0.2.90")).status_code == 202


async def test_a_subnet_whose_codes_are_never_verified_is_slowed_then_recovers(
    open_app: Callable[..., Any],
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    store: dict[str, Any],
) -> None:
    caplog.set_level(logging.INFO, logger="otp_service")
    settings = make_settings(
        trusted_proxies=[f"{PROXY}/32"], throttle_rates={"otp_send": "100/minute"}, **store
    )
    async with open_app(settings, client_ip=PROXY) as app:
        sent = [unique_email() for _ in range(20)]
        for i, email in enumerate(sent):  # 20 sends from one /24, none verified
            assert (await send_from(app, f"192.0.2.{i + 1}", email)).status_code == 202
        refused = [await send_from(app, "192.0.2.250") for _ in range(3)]
        assert {(r.status_code, r.json()["code"]) for r in refused} == {(429, "rate_limited")}
        body = refused[0].json()
        assert set(body) == {"type", "title", "status", "detail", "code", "instance", "retry_after"}
        assert 1 <= body["retry_after"] <= 3600
        slowed = [r for r in caplog.records if r.getMessage() == "abuse.subnet_slowed"]
        assert [r.__dict__["subnet"] for r in slowed] == ["192.0.x.0/24"]  # once, masked
        # Another /24 is not slowed.
        assert (await send_from(app, "192.0.3.1")).status_code == 202
        # Two of the codes verified (2/20 is not below 0.1): the subnet sends again.
        await drain(app)
        await asyncio.sleep(0.2)
        codes = {e.to: e.code for e in console_emails(capsys.readouterr().out)}
        for email in sent[:2]:
            res = await app.http.post(
                VERIFY, json={"email": email, "code": codes[email]}, headers={"x-forwarded-for": "192.0.2.5"}
            )
            assert res.status_code == 200
        assert (await send_from(app, "192.0.2.250")).status_code == 202

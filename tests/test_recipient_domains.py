"""Recipient domains (CONTRACT §6), through the HTTP API on Redis and on the embedded store: one
registrable domain gets at most OTP_DOMAIN_DAILY_LIMIT sends in 24 h (429 domain_limit, nothing
stored); shared mail providers are exempt; the limit holds exactly under concurrency."""

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

import pytest

from otp_service.settings import Settings
from otp_service.validation.domains import RecipientDomains, registrable

SEND = "/api/v1/auth/otp/send"
WIDE = {"otp_send": "10000/minute", "otp_verify": "10000/minute", "otp_send_subnet": "10000/minute",
        "otp_verify_subnet": "10000/minute"}  # fmt: skip


@pytest.fixture(params=["redis", "embedded"])
def store(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {} if request.param == "redis" else {"redis_url": None}


def settings_for(make_settings: Callable[..., Settings], store: dict[str, Any], limit: int) -> Settings:
    return make_settings(conversion_min_sends=1_000_000, throttle_rates=WIDE, domain_daily_limit=limit,
                         worker_enabled=False, **store)  # fmt: skip


def test_the_registrable_domain() -> None:
    assert registrable("a.b.example.co.uk") == "example.co.uk"
    assert registrable("mail.example.com") == "example.com"
    # The ICANN section only: anyone can take a name under a private suffix, so every free name
    # there shares its service's one budget rather than getting one each.
    for free in ("user.github.io", "x.duckdns.org", "a.b.github.io"):
        assert registrable(free) in ("github.io", "duckdns.org"), free
    domains = RecipientDomains(limit=5, shared=frozenset({"gmail.com"}))
    assert domains.budget("x@mx.catchall.example") == "catchall.example"
    assert domains.budget("x@gmail.com") is None


async def test_a_catch_all_domain_gets_its_budget_and_no_more(
    store: dict[str, Any], make_settings: Callable[..., Settings], open_app: Callable[..., Any]
) -> None:
    domain = f"catchall-{secrets.token_hex(4)}.example.co.uk"
    async with open_app(settings_for(make_settings, store, 3)) as app:
        codes = []
        for i, host in enumerate(["", "a.", "b.c.", "", ""]):  # subdomains share the budget
            res = await app.http.post(SEND, json={"email": f"u{i}@{host}{domain}"})
            codes.append(res.json().get("code", res.status_code))
        assert codes == [202, 202, 202, "domain_limit", "domain_limit"]
        refused = await app.http.post(SEND, json={"email": f"again@{domain}"})
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) > 80_000  # the oldest send leaves the 24 h window
        # Nothing stored for a refused send: that address has no cooldown.
        other = f"other-{secrets.token_hex(4)}.example"
        assert (await app.http.post(SEND, json={"email": f"u3@{other}"})).status_code == 202


async def test_shared_mail_providers_are_exempt(
    store: dict[str, Any], make_settings: Callable[..., Settings], open_app: Callable[..., Any]
) -> None:
    async with open_app(settings_for(make_settings, store, 2)) as app:
        answers = [
            (await app.http.post(SEND, json={"email": f"user{secrets.token_hex(4)}@gmail.com"})).status_code
            for _ in range(5)
        ]
    assert answers == [202] * 5


async def test_the_budget_is_exact_under_concurrency(
    make_settings: Callable[..., Settings], open_app: Callable[..., Any]
) -> None:
    domain = f"race-{secrets.token_hex(4)}.example"
    async with open_app(settings_for(make_settings, {}, 7)) as app:  # Redis
        answers = await asyncio.gather(
            *(app.http.post(SEND, json={"email": f"u{i}@{domain}"}) for i in range(40))
        )
    assert sorted(a.status_code for a in answers) == [202] * 7 + [429] * 33


def test_the_shared_providers_are_a_setting(make_settings: Callable[..., Settings]) -> None:
    default = RecipientDomains.of(make_settings())
    assert default.budget("a@gmail.com") is None
    assert default.budget("a@corp.example") == "corp.example"
    replaced = RecipientDomains.of(make_settings(shared_mail_domains=["Corp.Example"]))
    assert replaced.budget("a@corp.example") is None  # the operator's list replaces the default...
    assert replaced.budget("a@gmail.com") == "gmail.com"
    extended = RecipientDomains.of(make_settings(shared_mail_domains_extra=["corp.example"]))
    assert extended.budget("a@corp.example") is None  # ...and the extra list adds to either
    assert extended.budget("a@gmail.com") is None


@pytest.mark.parametrize("store", [{}, {"redis_url": None}], ids=["redis", "embedded"])
async def test_free_names_under_a_private_suffix_share_one_budget(
    store: dict[str, Any], make_settings: Callable[..., Settings], open_app: Callable[..., Any]
) -> None:
    """About fifty free `*.duckdns.org` names used to drain the global cap, each with a budget of
    its own; under the ICANN section they are one recipient domain."""
    async with open_app(settings_for(make_settings, store, 3)) as app:
        answers = []
        for n in range(5):
            res = await app.http.post(SEND, json={"email": f"u@name{n}-{id(app)}.duckdns.org"})
            answers.append(res.json().get("code", res.status_code))
    assert answers == [202, 202, 202, "domain_limit", "domain_limit"]

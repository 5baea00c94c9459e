"""Remembered sources (CONTRACT §6), through the HTTP API on Redis and on the embedded store:
someone who knows a user's address can neither lock them out with sends nor burn their code with
wrong guesses, once the user has verified from their own network."""

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from otp_service.settings import Settings
from tests.support import console_emails, drain

SEND = "/api/v1/auth/otp/send"
VERIFY = "/api/v1/auth/otp/verify"
PROXY = "203.0.113.7"  # the test client's address: the trusted proxy
HOME = "198.51.100.23"  # the user's network
WIDE = {"otp_send": "1000/minute", "otp_verify": "1000/minute", "otp_send_subnet": "1000/minute",
        "otp_verify_subnet": "1000/minute"}  # fmt: skip
COOLDOWN = 1
"""OTP_RATE_LIMIT_TTL of the tests that wait one out: the shortest there is (whole seconds)."""
PAST_COOLDOWN = COOLDOWN + 0.1
STORES = {"redis": {}, "embedded": {"redis_url": None}}


def remembering(make_settings: Callable[..., Settings], store: str, **overrides: Any) -> Settings:
    return make_settings(trusted_proxies=[f"{PROXY}/32"], throttle_rates=WIDE, conversion_min_sends=1_000_000,
                         **STORES[store], **overrides)  # fmt: skip


@pytest.fixture(params=list(STORES))
async def app(
    request: pytest.FixtureRequest, open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> AsyncIterator[Any]:
    async with open_app(remembering(make_settings, request.param, rate_limit_ttl=COOLDOWN)) as client:
        yield client


async def post(app: Any, path: str, body: dict[str, str], ip: str) -> Any:
    return await app.http.post(path, json=body, headers={"x-forwarded-for": ip})


def elsewhere(n: int) -> str:
    return f"192.0.{n % 200 + 1}.9"  # another /24 each


async def code_at_home(app: Any, email: str, capsys: pytest.CaptureFixture[str]) -> str:
    """The user asks for a code from home and reads it from the one email that arrives."""
    assert (await post(app, SEND, {"email": email}, HOME)).status_code == 202
    await drain(app)
    [sent] = console_emails(capsys.readouterr().out)
    return sent.code


async def signed_in_once(app: Any, email: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The user verifies a code from home: home is now a remembered source."""
    code = await code_at_home(app, email, capsys)
    assert (await post(app, VERIFY, {"email": email, "code": code}, HOME)).status_code == 200


async def test_sends_from_elsewhere_cannot_lock_a_remembered_source_out(
    app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    email = f"user-{secrets.token_hex(4)}@example.org"
    await signed_in_once(app, email, capsys)
    # 20 networks ask for codes for the user's address: the cooldown and the daily cap of
    # "elsewhere" are used up.
    answers = [(await post(app, SEND, {"email": email}, elsewhere(n))).status_code for n in range(20)]
    assert 429 in answers
    await drain(app)
    capsys.readouterr()
    # The user, at home, still gets a code, and it verifies on the first try.
    code = await code_at_home(app, email, capsys)
    assert (await post(app, VERIFY, {"email": email, "code": code}, HOME)).status_code == 200


async def test_wrong_guesses_from_elsewhere_cannot_burn_a_remembered_sources_code(
    app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    email = f"user-{secrets.token_hex(4)}@example.org"
    await signed_in_once(app, email, capsys)
    code = await code_at_home(app, email, capsys)
    wrong = "000000" if code != "000000" else "111111"
    codes = [(await post(app, VERIFY, {"email": email, "code": wrong}, elsewhere(7))).json()["code"]
             for _ in range(7)]  # fmt: skip
    # Elsewhere is refused from now on, with the answers anyone's burnt code gets (no tell that a
    # remembered user's code lives on)...
    assert codes == ["invalid_code"] * 4 + ["max_attempts_reached"] + ["code_expired"] * 2
    assert (await post(app, VERIFY, {"email": email, "code": code}, elsewhere(8))).status_code == 400
    # ...but the code lives on for the user at home.
    assert (await post(app, VERIFY, {"email": email, "code": code}, HOME)).status_code == 200


async def test_a_send_from_elsewhere_re_sends_a_remembered_sources_code(
    app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    email = f"user-{secrets.token_hex(4)}@example.org"
    await signed_in_once(app, email, capsys)
    first = await code_at_home(app, email, capsys)
    await asyncio.sleep(PAST_COOLDOWN)  # past the cooldown the first, not yet remembered, send started
    assert (await post(app, SEND, {"email": email}, elsewhere(3))).status_code == 202
    await drain(app)
    [again] = console_emails(capsys.readouterr().out)
    assert again.code == first  # the same code again, not a replacement
    assert (await post(app, VERIFY, {"email": email, "code": first}, HOME)).status_code == 200


@pytest.mark.parametrize("store", STORES)
async def test_without_a_verify_there_is_no_remembered_source(
    store: str, open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    # The default cooldown (60 s): it outlasts the test however slowly the machine runs it.
    async with open_app(remembering(make_settings, store)) as app:
        email = f"user-{secrets.token_hex(4)}@example.org"
        assert (await post(app, SEND, {"email": email}, HOME)).status_code == 202
        res = await post(app, SEND, {"email": email}, elsewhere(1))
    assert (res.status_code, res.json()["code"]) == (429, "cooldown")  # one cooldown for everyone


# Remembered sources pass what strangers spent or caused (CONTRACT §6): a reputation block, a
# paused provider, the recipient domain's budget, the global cap's reserve; and each remembered
# (mailbox, subnet) pair has a budget of its own.


async def guard_writes(app: Any, key: Callable[[Any], str], ms: int | None = 3_600_000) -> None:
    """Write a key as the reputation guard does (a block with its TTL, or the pause flag)."""
    store = app.web.otp._store  # the service's own Redis client and key builder
    args = ("PX", ms) if ms is not None else ()
    await store._redis.execute("SET", key(store._keys), "1", *args)


async def test_a_remembered_source_passes_a_block_of_its_network_and_a_pause(
    app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    email = f"user-{secrets.token_hex(4)}@example.org"
    await signed_in_once(app, email, capsys)
    # Strangers on the user's /24 drew bounces: the subnet and one client are blocked.
    await guard_writes(app, lambda k: k.source_blocked("198.51.100.0/24"))
    await guard_writes(app, lambda k: k.client_blocked(HOME))
    stranger = await post(app, SEND, {"email": f"other-{secrets.token_hex(4)}@example.org"}, "198.51.100.99")
    assert (stranger.status_code, stranger.json()["code"]) == (429, "rate_limited")
    # The first code's cooldown is everyone's before the verify; the remembered pair's own starts
    # with its first send.
    assert (await post(app, SEND, {"email": email}, HOME)).status_code == 202  # the user passes
    # No healthy provider left: strangers are held back, the returning user is not.
    await guard_writes(app, lambda k: k.sending_paused, None)
    paused = await post(app, SEND, {"email": f"other-{secrets.token_hex(4)}@example.org"}, elsewhere(1))
    assert (paused.status_code, paused.json()["code"]) == (503, "sending_paused")
    await asyncio.sleep(PAST_COOLDOWN)
    assert (await post(app, SEND, {"email": email}, HOME)).status_code == 202


@pytest.mark.parametrize("store", STORES)
async def test_strangers_cannot_spend_a_company_domain_or_the_reserve_for_its_remembered_users(
    store: str, open_app: Callable[..., Any], make_settings: Callable[..., Settings],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    settings = remembering(make_settings, store, domain_daily_limit=3, global_daily_limits={"email": 10},
                           global_reserve=0.2)  # fmt: skip
    async with open_app(settings) as app:
        corp = f"corp-{secrets.token_hex(3)}.example"
        user = f"ceo@{corp}"
        await signed_in_once(app, user, capsys)  # 1 of the domain's 3, 1 of the cap's 10
        answers = []
        for n in range(10):  # strangers: the domain's budget, then the cap without its reserve
            to = f"s{n}@{corp}" if n < 4 else f"s@x{n}-{secrets.token_hex(3)}.example"
            answers.append((await post(app, SEND, {"email": to}, elsewhere(n))).json().get("code", 202))
        assert answers == [202, 202, "domain_limit", "domain_limit", 202, 202, 202, 202, 202, "global_limit"]
        # 8 of 10 used, the other 2 kept for remembered sources: the user gets both (the remembered
        # pair's own cooldown starts with this send).
        assert (await post(app, SEND, {"email": user}, HOME)).status_code == 202
        await drain(app)
        capsys.readouterr()


@pytest.mark.parametrize("store", STORES)
async def test_each_remembered_network_has_a_budget_of_its_own(
    store: str, open_app: Callable[..., Any], make_settings: Callable[..., Settings],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Someone else behind a carrier NAT the user once signed in from cannot spend the user's
    budget at home: each (mailbox, subnet) pair counts apart. The budget spent here is the daily
    cap: without a cooldown (OTP_RATE_LIMIT_TTL=0) the sends follow each other at once."""
    async with open_app(remembering(make_settings, store, rate_limit_ttl=0)) as app:
        email = f"user-{secrets.token_hex(4)}@example.org"
        nat = "100.64.7.9"
        await signed_in_once(app, email, capsys)
        assert (await post(app, SEND, {"email": email}, nat)).status_code == 202
        await drain(app)
        [sent] = console_emails(capsys.readouterr().out)
        assert (await post(app, VERIFY, {"email": email, "code": sent.code}, nat)).status_code == 200
        answers = []
        for _ in range(11):  # someone on the NAT spends that pair's daily cap of 10
            answers.append((await post(app, SEND, {"email": email}, "100.64.7.10")).json().get("code", 202))
        assert answers == [202] * 10 + ["daily_limit"]
        assert (await post(app, SEND, {"email": email}, HOME)).status_code == 202  # home: its own budget
        await drain(app)
        capsys.readouterr()

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


@pytest.fixture(params=["redis", "embedded"])
async def app(
    request: pytest.FixtureRequest, open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> AsyncIterator[Any]:
    store = {} if request.param == "redis" else {"redis_url": None}
    settings = make_settings(trusted_proxies=[f"{PROXY}/32"], throttle_rates=WIDE, conversion_min_sends=1_000_000,
                             rate_limit_ttl=2, **store)  # fmt: skip
    async with open_app(settings) as client:
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
    assert codes[-1] == "max_attempts_reached"  # elsewhere is refused from now on...
    assert (await post(app, VERIFY, {"email": email, "code": code}, elsewhere(8))).status_code == 400
    # ...but the code lives on for the user at home.
    assert (await post(app, VERIFY, {"email": email, "code": code}, HOME)).status_code == 200


async def test_a_send_from_elsewhere_re_sends_a_remembered_sources_code(
    app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    email = f"user-{secrets.token_hex(4)}@example.org"
    await signed_in_once(app, email, capsys)
    first = await code_at_home(app, email, capsys)
    await asyncio.sleep(2.1)  # past the cooldown the first, not yet remembered, send started
    assert (await post(app, SEND, {"email": email}, elsewhere(3))).status_code == 202
    await drain(app)
    [again] = console_emails(capsys.readouterr().out)
    assert again.code == first  # the same code again, not a replacement
    assert (await post(app, VERIFY, {"email": email, "code": first}, HOME)).status_code == 200


async def test_without_a_verify_there_is_no_remembered_source(
    app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    email = f"user-{secrets.token_hex(4)}@example.org"
    assert (await post(app, SEND, {"email": email}, HOME)).status_code == 202
    res = await post(app, SEND, {"email": email}, elsewhere(1))
    assert (res.status_code, res.json()["code"]) == (429, "cooldown")  # one cooldown for everyone

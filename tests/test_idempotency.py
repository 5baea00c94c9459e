"""Idempotency-Key on send, through the HTTP API on PostgreSQL, with the Redis stores and with the
in-process ones (the same cases): a repeat answers what the first answered and has no other
effect; a different body is 422; concurrent repeats give one code and one email."""

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from otp_service.settings import Settings
from tests.support import console_emails, drain, unique_email

SEND = "/api/v1/auth/otp/send"
VERIFY = "/api/v1/auth/otp/verify"
RATES = {"otp_send": "1000/minute", "otp_verify": "1000/minute", "otp_send_subnet": "1000/minute",
         "otp_verify_subnet": "1000/minute"}  # fmt: skip


@pytest.fixture(params=["redis", "memory"])
async def app(
    request: pytest.FixtureRequest, open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> AsyncIterator[Any]:
    store = {} if request.param == "redis" else {"redis_url": None}
    settings = make_settings(conversion_min_sends=1_000_000, throttle_rates=RATES, **store)
    async with open_app(settings) as client:
        yield client


async def send(app: Any, body: dict[str, Any], key: str | None) -> httpx.Response:
    headers = {} if key is None else {"idempotency-key": key}
    response: httpx.Response = await app.http.post(SEND, json=body, headers=headers)
    return response


async def usage(app: Any) -> int:
    return int((await app.web.usage.usage()).sent_24h["email"])


async def test_a_repeat_answers_the_same_and_does_nothing_else(
    app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    email, key = unique_email(), str(uuid.uuid4())
    first = await send(app, {"email": email}, key)
    assert first.status_code == 202
    assert "idempotent-replayed" not in first.headers
    await drain(app)
    sent_before = await usage(app)
    for _ in range(3):  # a client that lost the 202 and retries, within the cooldown
        again = await send(app, {"email": email}, key)
        assert (again.status_code, again.content) == (202, first.content)
        assert again.headers["idempotent-replayed"] == "true"
    await drain(app)
    [emailed] = console_emails(capsys.readouterr().out)  # one code, one email
    assert await usage(app) == sent_before  # no daily or global cap movement
    # The code is still the first one, and the cooldown is the first send's: without a key, the
    # address is in its cooldown, as after one send.
    cooling = await send(app, {"email": email}, None)
    assert cooling.json()["code"] == "cooldown"
    assert (await app.http.post(VERIFY, json={"email": email, "code": emailed.code})).status_code == 200


async def test_a_refusal_is_replayed_too_and_a_new_key_is_a_new_request(app: Any) -> None:
    email = unique_email()
    assert (await send(app, {"email": email}, "k-first-" + uuid.uuid4().hex)).status_code == 202
    key = "k-second-" + uuid.uuid4().hex
    refused = await send(app, {"email": email}, key)
    assert (refused.status_code, refused.json()["code"]) == (429, "cooldown")
    assert "idempotent-replayed" not in refused.headers
    await asyncio.sleep(1.1)
    again = await send(app, {"email": email}, key)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == refused.content  # the same retry_after: exactly what the first answered
    assert again.headers["retry-after"] == refused.headers["retry-after"]
    other = await send(app, {"email": email}, "k-third-" + uuid.uuid4().hex)
    assert other.json()["code"] == "cooldown"
    assert int(other.headers["retry-after"]) <= int(refused.headers["retry-after"])


async def test_the_same_key_with_another_body_is_422(app: Any) -> None:
    key = str(uuid.uuid4())
    email = unique_email()
    assert (await send(app, {"email": email}, key)).status_code == 202
    for body in ({"email": email, "locale": "en"}, {"email": email, "captcha_token": "x"}):
        res = await send(app, body, key)
        assert (res.status_code, res.json()["code"]) == (422, "idempotency_key_reused"), body
        assert "idempotent-replayed" not in res.headers
    # Key order and spacing are not the body: the same fields replay.
    res = await app.http.post(SEND, content=f'{{ "email" : "{email}" }}'.encode(),
                              headers={"idempotency-key": key, "content-type": "application/json"})  # fmt: skip
    assert (res.status_code, res.headers["idempotent-replayed"]) == (202, "true")


async def test_a_key_belongs_to_its_address(app: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """A predictable key sent first for another address does not take this one's: the same key
    for another address is an unrelated key (no replay, no 422), and the user gets a code."""
    key, attacker, user = "order-1234", unique_email(), unique_email()
    assert (await send(app, {"email": attacker}, key)).status_code == 202
    res = await send(app, {"email": user}, key)
    assert res.status_code == 202
    assert "idempotent-replayed" not in res.headers
    await drain(app)
    assert sorted(e.to for e in console_emails(capsys.readouterr().out)) == sorted([attacker, user])


async def test_concurrent_requests_with_one_key_make_one_code_and_one_email(
    app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    email, key = unique_email(), str(uuid.uuid4())
    answers = await asyncio.gather(*(send(app, {"email": email}, key) for _ in range(20)))
    assert {(a.status_code, a.content) for a in answers} == {(202, answers[0].content)}
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 19
    await drain(app)
    assert [e.to for e in console_emails(capsys.readouterr().out)] == [email]


async def test_a_request_refused_before_the_decision_keeps_no_answer(
    app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    key = str(uuid.uuid4())
    res = await send(app, {"email": "someone@mailinator.com"}, key)
    assert res.json()["code"] == "disposable_email"
    again = await send(app, {"email": "someone@mailinator.com"}, key)
    assert again.json()["code"] == "disposable_email"
    assert "idempotent-replayed" not in again.headers  # decided afresh (and the same)
    email = unique_email()
    assert (await send(app, {"email": email}, key)).status_code == 202  # the key was not kept
    await drain(app)
    assert [e.to for e in console_emails(capsys.readouterr().out)] == [email]


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "tab\there", "ünïcode"])
async def test_a_malformed_key_is_422(app: Any, key: str) -> None:
    res = await app.http.post(SEND, json={"email": unique_email()}, headers={"idempotency-key": key.encode()})
    assert (res.status_code, res.json()["code"]) == (422, "invalid_request")


async def test_repeats_still_count_against_the_clients_rate(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    async with open_app(make_settings(conversion_min_sends=1_000_000)) as app:  # 3/minute per client
        key = str(uuid.uuid4())
        email = unique_email()
        statuses = [(await send(app, {"email": email}, key)).status_code for _ in range(4)]
        assert statuses == [202, 202, 202, 429]
        limited = await send(app, {"email": email}, key)
        assert (limited.json()["code"], "idempotent-replayed" in limited.headers) == ("rate_limited", False)


async def test_a_key_belongs_to_the_address_whatever_its_case(app: Any) -> None:
    """`IDV@…` and `idv@…` are one address (§3: addresses are normalised): the same key and the
    same address in another case is a replay, not a reused key (found from outside)."""
    email = f"idv-{secrets.token_hex(4)}@example.org"
    first = await send(app, {"email": email}, "case-1")
    again = await send(app, {"email": email.upper()}, "case-1")
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.headers.get("idempotent-replayed") == "true"

"""Send and verify through the HTTP stack, on Redis and PostgreSQL."""

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import text

from otp_service.settings import Settings
from tests.conftest import REDIS_HOST, REDIS_PORT
from tests.support import Proxy, console_emails, drain, unique_email

SEND = "/api/v1/auth/otp/send"
VERIFY = "/api/v1/auth/otp/verify"
WIDE_RATES = {
    "otp_send": "100000/minute",
    "otp_verify": "100000/minute",
    "otp_send_subnet": "100000/minute",
    "otp_verify_subnet": "100000/minute",
}


@pytest.fixture
async def wide(open_app: Callable[..., Any], make_settings: Callable[..., Settings]) -> AsyncIterator[Any]:
    """An app whose per-IP rates do not get in the way of per-address tests."""
    async with open_app(make_settings(conversion_min_sends=1_000_000, throttle_rates=WIDE_RATES)) as app:
        yield app


async def test_send_then_verify_with_the_emailed_code(wide: Any, capsys: pytest.CaptureFixture[str]) -> None:
    email = unique_email()
    res = await wide.http.post(SEND, json={"email": email.upper()})
    assert res.status_code == 202
    body = res.json()
    assert len(body.pop("send_id")) == 22  # 128 random bits, URL-safe (CONTRACT §3)
    assert body == {"status": "pending", "expires_in": 300, "resend_after": 60}
    await drain(wide)
    [sent] = console_emails(capsys.readouterr().out)
    assert sent.to == email
    res = await wide.http.post(VERIFY, json={"email": email, "code": sent.code})
    assert res.status_code == 200
    assert res.json() == {"status": "approved", "email": email}
    again = await wide.http.post(VERIFY, json={"email": email, "code": sent.code})
    assert again.json()["code"] == "code_expired"


async def test_wrong_codes_then_invalidated(wide: Any, capsys: pytest.CaptureFixture[str]) -> None:
    email = unique_email()
    await wide.http.post(SEND, json={"email": email})
    await drain(wide)
    [sent] = console_emails(capsys.readouterr().out)
    wrong = "000000" if sent.code != "000000" else "111111"
    bodies = [(await wide.http.post(VERIFY, json={"email": email, "code": wrong})).json() for _ in range(5)]
    assert [b["code"] for b in bodies] == ["invalid_code"] * 4 + ["max_attempts_reached"]
    assert [b.get("attempts_remaining") for b in bodies[:4]] == [4, 3, 2, 1]
    res = await wide.http.post(VERIFY, json={"email": email, "code": sent.code})
    assert (res.status_code, res.json()["code"]) == (400, "code_expired")


@pytest.mark.parametrize("code", ["12345", "1234567", "abcdef", "12 456", "١٢٣٤٥٦"])
async def test_malformed_code_is_422_and_not_an_attempt(wide: Any, code: str) -> None:
    email = unique_email()
    await wide.http.post(SEND, json={"email": email})
    res = await wide.http.post(VERIFY, json={"email": email, "code": code})
    assert (res.status_code, res.json()["code"]) == (422, "invalid_request")
    wrong = await wide.http.post(VERIFY, json={"email": email, "code": "999999"})
    if wrong.json()["code"] == "invalid_code":
        assert wrong.json()["attempts_remaining"] == 4


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"email": "not-an-address"}, 422, "invalid_email"),
        ({"mail": "a@b.com"}, 422, "invalid_email"),
        ({"email": "a@mailinator.com"}, 400, "disposable_email"),
        ({"email": "a@gmial.com"}, 400, "email_typo"),
    ],
)
async def test_refused_addresses(wide: Any, body: dict[str, str], status: int, code: str) -> None:
    res = await wide.http.post(SEND, json=body)
    assert res.status_code == status
    assert res.headers["content-type"] == "application/problem+json"
    assert res.json()["code"] == code
    if code == "email_typo":
        assert res.json()["suggestion"] == "a@gmail.com"


async def test_cooldown_and_retry_after(wide: Any) -> None:
    email = unique_email()
    assert (await wide.http.post(SEND, json={"email": email})).status_code == 202
    res = await wide.http.post(SEND, json={"email": email})
    assert res.status_code == 429
    assert res.json()["code"] == "cooldown"
    assert res.headers["retry-after"] == str(res.json()["retry_after"])
    assert 1 <= res.json()["retry_after"] <= 60


async def test_ip_rate_counts_refused_addresses_too(client: Any) -> None:
    """Default 3/minute: two invalid addresses and one valid send use up the client's rate."""
    assert (await client.http.post(SEND, json={"email": "x@mailinator.com"})).status_code == 400
    assert (await client.http.post(SEND, json={"email": "nope"})).status_code == 422
    assert (await client.http.post(SEND, json={"email": unique_email()})).status_code == 202
    res = await client.http.post(SEND, json={"email": unique_email()})
    assert (res.status_code, res.json()["code"]) == (429, "rate_limited")
    assert int(res.headers["retry-after"]) >= 1


async def test_trusted_proxy_forwards_client_ip(open_app: Callable[..., Any], make_settings: Any) -> None:
    settings = make_settings(
        trusted_proxies=["203.0.113.0/24"],
        conversion_min_sends=1_000_000,
        throttle_rates={"otp_send": "1/minute", "otp_verify": "5/minute"},
    )
    async with open_app(settings, client_ip="203.0.113.7") as app:
        for client in ("198.51.100.1", "198.51.100.2"):
            res = await app.http.post(
                SEND, json={"email": unique_email()}, headers={"x-forwarded-for": client}
            )
            assert res.status_code == 202
        res = await app.http.post(
            SEND, json={"email": unique_email()}, headers={"x-forwarded-for": "198.51.100.1"}
        )
        assert res.json()["code"] == "rate_limited"


async def test_untrusted_peer_cannot_spoof_forwarded_for(client: Any) -> None:
    codes = []
    for i in range(4):
        res = await client.http.post(
            SEND, json={"email": unique_email()}, headers={"x-forwarded-for": f"1.1.1.{i}"}
        )
        codes.append(res.status_code)
    assert codes == [202, 202, 202, 429]


async def test_hammered_address_gets_exactly_one_202_and_one_email(
    wide: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    email = unique_email()
    results = await asyncio.gather(*(wide.http.post(SEND, json={"email": email}) for _ in range(300)))
    statuses = [r.status_code for r in results]
    assert statuses.count(202) == 1
    assert statuses.count(429) == 299
    assert {r.json()["code"] for r in results if r.status_code == 429} == {"cooldown"}
    await drain(wide)
    await asyncio.sleep(0.2)
    assert [e.to for e in console_emails(capsys.readouterr().out)] == [email]


async def test_global_cap_accepts_exactly_the_cap_without_its_reserve(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(
        conversion_min_sends=1_000_000,
        throttle_rates=WIDE_RATES,
        global_daily_limits={"email": 40},
        send_rate=1000,
    )
    async with open_app(settings) as app:
        emails = [unique_email() for _ in range(250)]
        results = await asyncio.gather(*(app.http.post(SEND, json={"email": e}) for e in emails))
        statuses = [r.status_code for r in results]
        assert statuses.count(202) == 36  # the last 10% (OTP_GLOBAL_RESERVE) is remembered sources'
        refused = [r for r in results if r.status_code == 503]
        assert len(refused) == 214
        assert {r.json()["code"] for r in refused} == {"global_limit"}
        assert all(int(r.headers["retry-after"]) > 80000 for r in refused)
        await drain(app)
        await asyncio.sleep(0.2)
        accepted = {e for e, r in zip(emails, results, strict=True) if r.status_code == 202}
        assert {e.to for e in console_emails(capsys.readouterr().out)} == accepted


async def test_suppressed_address_gets_identical_answers_and_no_email(
    wide: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    suppressed, normal = unique_email(), unique_email()
    async with wide.db.begin() as conn:
        await conn.execute(
            text("INSERT INTO suppressions (email, reason, source) VALUES (:e, 'bounce', 'test')"),
            {"e": suppressed},
        )
    first = [await wide.http.post(SEND, json={"email": e}) for e in (suppressed, normal)]
    second = [await wide.http.post(SEND, json={"email": e}) for e in (suppressed, normal)]
    assert first[0].status_code == first[1].status_code == 202
    # The same bytes but for each send's own random id, of the same length.
    ids = [res.json()["send_id"] for res in first]
    assert first[0].content.replace(ids[0].encode(), b"-") == first[1].content.replace(ids[1].encode(), b"-")
    assert first[0].headers["content-length"] == first[1].headers["content-length"]
    assert second[0].status_code == second[1].status_code == 429
    assert second[0].json()["code"] == second[1].json()["code"] == "cooldown"
    await drain(wide)
    assert [e.to for e in console_emails(capsys.readouterr().out)] == [normal]


async def test_one_redis_round_trip_per_send_and_verify(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """Counted on the wire: every command any of the app's Redis clients sends passes through
    a proxy that parses them."""
    proxy = Proxy(REDIS_HOST, REDIS_PORT, count_redis_commands=True)
    await proxy.start()
    settings = make_settings(
        worker_enabled=False, conversion_min_sends=1_000_000, throttle_rates=WIDE_RATES, redis_url=proxy.url
    )
    try:
        async with open_app(settings) as app:
            email = unique_email()
            await app.http.post(SEND, json={"email": unique_email()})  # connections opened, scripts loaded
            await app.http.post(VERIFY, json={"email": email, "code": "123456"})
            cases = [
                (SEND, {"email": email}),  # accepted
                (SEND, {"email": email}),  # cooldown
                (SEND, {"email": "x@mailinator.com"}),  # refused address: only the IP throttle
                (SEND, {"email": "x@gmial.com"}),
                (VERIFY, {"email": email, "code": "000000"}),
                (VERIFY, {"email": unique_email(), "code": "000000"}),
            ]
            for path, body in cases:
                before = proxy.commands
                res = await app.http.post(path, json=body)
                assert res.status_code < 500
                assert proxy.commands - before == 1, (path, body)
            before = proxy.commands
            await app.http.post(VERIFY, json={"email": email, "code": "12"})  # malformed: no round trip
            assert proxy.commands - before == 0
    finally:
        await proxy.cut()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _start_redis(port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    probe = Redis(port=port)
    try:
        for _ in range(100):
            try:
                await probe.ping()
                return proc
            except Exception:
                await asyncio.sleep(0.05)
    finally:
        await probe.aclose()
    raise RuntimeError("redis-server did not start")


async def test_redis_down_is_a_fast_503_and_recovers_by_itself(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    port = _free_port()
    proc = await _start_redis(port)
    try:
        settings = make_settings(
            redis_url=f"redis://127.0.0.1:{port}/0", conversion_min_sends=1_000_000, throttle_rates=WIDE_RATES
        )
        async with open_app(settings) as app:
            assert (await app.http.post(SEND, json={"email": unique_email()})).status_code == 202
            proc.terminate()
            await proc.wait()
            for path, body in (
                (SEND, {"email": unique_email()}),
                (VERIFY, {"email": unique_email(), "code": "123456"}),
            ):
                started = time.monotonic()
                res = await app.http.post(path, json=body)
                assert time.monotonic() - started < 2
                assert res.status_code == 503
                assert res.json()["code"] == "unavailable"
                assert int(res.headers["retry-after"]) >= 1
            proc = await _start_redis(port)
            res = await app.http.post(SEND, json={"email": unique_email()})
            if res.status_code == 503:  # at most one stale pooled connection
                res = await app.http.post(SEND, json={"email": unique_email()})
            assert res.status_code == 202
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()

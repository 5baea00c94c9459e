"""The optional captcha against a fake siteverify on loopback (a real HTTP server): what the
service posts, and each answer's outcome: accepted, refused, missing, 5xx and unreachable."""

import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from otp_service.settings import Settings
from otp_service.validation.captcha import TIMEOUT
from tests.support import drain, free_port, unique_email

SEND = "/api/v1/auth/otp/send"
SECRET = "captcha-secret-0123456789"
PROXY = "203.0.113.7"


class Siteverify:
    """Accepts the token "good", refuses any other; answers 500 for "boom"."""

    def __init__(self) -> None:
        self.posts: list[dict[str, str]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/siteverify"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["content-length"])
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                fake.posts.append({**form, "content-type": self.headers["content-type"]})
                if form.get("response") == "slow":
                    time.sleep(TIMEOUT + 0.5)
                if form.get("response") == "boom":
                    self.send_response(500)
                    self.end_headers()
                    return
                ok = form.get("secret") == SECRET and form.get("response") == "good"
                body = {"success": ok, **({} if ok else {"error-codes": ["invalid-input-response"]})}
                payload = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def siteverify() -> Iterator[Siteverify]:
    fake = Siteverify()
    # shutdown() waits for serve_forever's next poll: 0.5 s by default, at each test's end.
    thread = threading.Thread(target=fake.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


@pytest.fixture
def captcha_settings(
    make_settings: Callable[..., Settings], siteverify: Siteverify
) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "captcha_provider": "turnstile",
            "captcha_secret": SECRET,
            "captcha_verify_url": siteverify.url,
            "trusted_proxies": [f"{PROXY}/32"],
            "conversion_min_sends": 1_000_000,
        }
        return make_settings(**{**values, **overrides})

    return make


async def send(app: Any, token: str | None, ip: str = "198.51.100.9") -> Any:
    body: dict[str, str] = {"email": unique_email()}
    if token is not None:
        body["captcha_token"] = token
    return await app.http.post(SEND, json=body, headers={"x-forwarded-for": ip})


async def test_an_accepted_token_sends_and_the_provider_is_told_the_client_ip(
    open_app: Callable[..., Any], captcha_settings: Callable[..., Settings], siteverify: Siteverify
) -> None:
    async with open_app(captcha_settings(), client_ip=PROXY) as app:
        assert (await send(app, "good", ip="2001:db8:5:6::7")).status_code == 202
        await drain(app)
    [post] = siteverify.posts
    assert post == {
        "secret": SECRET,
        "response": "good",
        "remoteip": "2001:db8:5:6::7",
        "content-type": "application/x-www-form-urlencoded",
    }


@pytest.mark.parametrize("token", [None, "", "forged"])
async def test_a_missing_or_refused_token_is_captcha_failed(
    open_app: Callable[..., Any], captcha_settings: Callable[..., Settings], token: str | None
) -> None:
    async with open_app(captcha_settings(), client_ip=PROXY) as app:
        res = await send(app, token)
        assert (res.status_code, res.json()["code"]) == (400, "captcha_failed")
        assert res.headers["content-type"] == "application/problem+json"


async def test_a_missing_token_makes_no_call(
    open_app: Callable[..., Any], captcha_settings: Callable[..., Settings], siteverify: Siteverify
) -> None:
    async with open_app(captcha_settings(), client_ip=PROXY) as app:
        await send(app, None)
    assert siteverify.posts == []


async def test_failed_captchas_count_against_the_rate(
    open_app: Callable[..., Any], captcha_settings: Callable[..., Settings]
) -> None:
    async with open_app(captcha_settings(), client_ip=PROXY) as app:
        for token in (None, "forged", "forged"):
            assert (await send(app, token)).json()["code"] == "captcha_failed"
        res = await send(app, "good")
        assert (res.status_code, res.json()["code"]) == (429, "rate_limited")


async def test_siteverify_answering_5xx_fails_closed(
    open_app: Callable[..., Any], captcha_settings: Callable[..., Settings]
) -> None:
    async with open_app(captcha_settings(), client_ip=PROXY) as app:
        res = await send(app, "boom")
        assert (res.status_code, res.json()["code"]) == (503, "unavailable")
        assert int(res.headers["retry-after"]) >= 1


async def test_siteverify_not_answering_in_time_fails_closed(
    open_app: Callable[..., Any], captcha_settings: Callable[..., Settings]
) -> None:
    async with open_app(captcha_settings(), client_ip=PROXY) as app:
        res = await send(app, "slow")
        assert (res.status_code, res.json()["code"]) == (503, "unavailable")


async def test_siteverify_unreachable_fails_closed(
    open_app: Callable[..., Any], captcha_settings: Callable[..., Settings]
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/siteverify"  # nothing listens there
    async with open_app(captcha_settings(captcha_verify_url=closed), client_ip=PROXY) as app:
        res = await send(app, "good")
        assert (res.status_code, res.json()["code"]) == (503, "unavailable")


async def test_without_a_provider_no_token_is_needed(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], siteverify: Siteverify
) -> None:
    async with open_app(make_settings()) as app:
        assert (await app.http.post(SEND, json={"email": unique_email()})).status_code == 202
        await drain(app)
    assert siteverify.posts == []


@pytest.mark.parametrize("store", [{}, {"redis_url": None}], ids=["redis", "embedded"])
async def test_adaptive_mode_asks_for_the_captcha_once_the_cap_is_half_used(
    open_app: Callable[..., Any], captcha_settings: Callable[..., Settings], siteverify: Siteverify,
    store: dict[str, Any],
) -> None:  # fmt: skip
    settings = captcha_settings(captcha_mode="adaptive", global_daily_limits={"email": 4}, worker_enabled=False,
                                throttle_rates={"otp_send": "100/minute"}, **store)  # fmt: skip
    async with open_app(settings) as app:
        assert (await send(app, None)).status_code == 202  # quiet: the token is optional
        assert (await send(app, None)).status_code == 202
        res = await send(app, None)  # half the service-wide cap used: under attack
        assert (res.status_code, res.json()["code"]) == (400, "captcha_required")
        assert (await send(app, "good")).status_code == 202  # with a token: checked, and sent
        assert (await send(app, "bad")).json()["code"] == "captcha_failed"
    assert [p["response"] for p in siteverify.posts] == ["good", "bad"]  # checked only when present


@pytest.mark.parametrize("store", [{}, {"redis_url": None}], ids=["redis", "embedded"])
async def test_adaptive_mode_asks_a_slowed_subnet_only(
    open_app: Callable[..., Any], captcha_settings: Callable[..., Settings], store: dict[str, Any]
) -> None:
    settings = captcha_settings(captcha_mode="adaptive", conversion_min_sends=2, conversion_min_ratio=0.5,
                                worker_enabled=False, **store)  # fmt: skip
    async with open_app(settings) as app:
        for _ in range(2):  # two codes from one subnet, none verified
            assert (await send(app, None, ip="198.51.100.20")).status_code == 202
        res = await send(app, None, ip="198.51.100.21")  # the same /24: slowed, so asked
        assert (res.status_code, res.json()["code"]) == (400, "captcha_required")
        assert (await send(app, None, ip="192.0.2.5")).status_code == 202  # anyone else: not asked


@pytest.mark.parametrize("store", [{}, {"redis_url": None}], ids=["redis", "embedded"])
@pytest.mark.parametrize("mode", ["always", "adaptive"])
async def test_a_blocked_or_paused_source_is_asked_for_the_captcha_and_a_person_passes(
    open_app: Callable[..., Any], captcha_settings: Callable[..., Settings], store: dict[str, Any], mode: str
) -> None:
    """CONTRACT §6: with a captcha provider, the reputation guard's block and a paused provider
    ask for the widget rather than shut a person out; a valid token passes both."""
    settings = captcha_settings(captcha_mode=mode, worker_enabled=False, throttle_rates={"otp_send": "100/minute"},
                                **store)  # fmt: skip
    async with open_app(settings) as app:
        redis, keys = app.web.otp._store._redis, app.web.otp._store._keys  # as the guard writes them
        await redis.execute("SET", keys.client_blocked("198.51.100.9"), "1", "PX", 3_600_000)
        if mode == "adaptive":
            res = await send(app, None)
            assert (res.status_code, res.json()["code"]) == (400, "captcha_required")
        assert (await send(app, "good")).status_code == 202
        assert (await send(app, None, ip="192.0.2.5")).status_code == (202 if mode == "adaptive" else 400)
        await redis.execute("SET", keys.sending_paused, "1")
        if mode == "adaptive":
            res = await send(app, None, ip="192.0.2.6")
            assert (res.status_code, res.json()["code"]) == (400, "captcha_required")
        assert (await send(app, "good", ip="192.0.2.7")).status_code == 202

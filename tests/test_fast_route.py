"""Send and verify are FastRoutes (api/routing.py): a well-formed JSON body is answered without
FastAPI's request machinery, everything else by FastAPI's own handler for the same endpoint.

The claim is checked against a reference app whose send and verify routes are plain APIRoutes
built from the same declarations: the same requests to both give the same status, headers and
bytes. Which way a request went is observed by counting FastAPI's dependency solver calls.
"""

import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import fastapi.routing
import httpx
import pytest
from fastapi import FastAPI
from fastapi.dependencies.utils import solve_dependencies

from bench.plain_routes import plain_routes
from otp_service.api.deps import get_otp_service
from otp_service.api.state import STATE_KEY
from otp_service.settings import Settings
from tests.support import console_emails, drain, unique_email

SEND = "/api/v1/auth/otp/send"
VERIFY = "/api/v1/auth/otp/verify"
JSON = {"content-type": "application/json"}


class Solver:
    """Counts FastAPI's dependency solving (a spy around the library function)."""

    def __init__(self) -> None:
        self.calls = 0


@pytest.fixture
def solver(monkeypatch: pytest.MonkeyPatch) -> Solver:
    spy = Solver()
    real = solve_dependencies

    async def counted(*args: Any, **kwargs: Any) -> Any:
        spy.calls += 1
        return await real(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted)
    return spy


class Pair:
    def __init__(self, fast: Any, reference: Any, solver: Solver) -> None:
        self.fast = fast
        self.reference = reference
        self.solver = solver

    async def post(
        self, app: Any, path: str, body: Any, headers: dict[str, str]
    ) -> tuple[httpx.Response, bool]:
        """(answer, whether FastAPI's dependency solver ran)."""
        before = self.solver.calls
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        res = await app.http.post(path, content=content, headers=headers)
        return res, self.solver.calls > before


@pytest.fixture
async def pair(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], solver: Solver
) -> AsyncIterator[Pair]:
    rates = {
        "otp_send": "1000/minute",
        "otp_verify": "1000/minute",
        "otp_send_subnet": "1000/minute",
        "otp_verify_subnet": "1000/minute",
    }

    @contextlib.asynccontextmanager
    async def both() -> AsyncIterator[Pair]:
        async with open_app(make_settings(conversion_min_sends=1_000_000, throttle_rates=rates)) as fast:
            reference_settings = make_settings(
                conversion_min_sends=1_000_000, throttle_rates=rates, worker_enabled=False
            )
            async with open_app(reference_settings, before_start=plain_routes) as reference:
                yield Pair(fast, reference, solver)

    async with both() as p:
        yield p


def comparable(res: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    """The answer, its random send_id (same length every time) masked."""
    headers = {k: v for k, v in res.headers.items() if k != "x-request-id"}
    assert res.headers["x-request-id"]
    content = re.sub(rb'"send_id":"[A-Za-z0-9_-]{22}"', b'"send_id":"-"', res.content)
    return res.status_code, content, headers


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (SEND, {"email": "someone@mailinator.com"}),  # disposable
        (SEND, {"email": "someone@gmial.com"}),  # typo
        (SEND, {"email": "not an address"}),  # invalid mailbox, well-formed body
        (VERIFY, {"email": "nobody@example.org", "code": "123456"}),  # no code: expired
        (VERIFY, {"email": "nobody@example.org", "code": "12"}),  # wrong length: not counted
        (VERIFY, {"email": "not an address", "code": "123456"}),
    ],
)
async def test_both_ways_give_the_same_bytes(pair: Pair, path: str, body: Any) -> None:
    fast, solved_fast = await pair.post(pair.fast, path, body, JSON)
    slow, solved_slow = await pair.post(pair.reference, path, body, JSON)
    assert (solved_fast, solved_slow) == (False, True)
    assert comparable(fast) == comparable(slow)
    assert fast.headers["content-type"] == "application/problem+json"


async def test_accepted_cooldown_wrong_and_verified_are_the_same_both_ways(
    pair: Pair, capsys: pytest.CaptureFixture[str]
) -> None:
    answers: list[list[Any]] = []
    for app in (pair.fast, pair.reference):
        email = unique_email()
        accepted, _ = await pair.post(app, SEND, {"email": email}, JSON)
        cooldown, _ = await pair.post(app, SEND, {"email": email}, JSON)
        await drain(pair.fast)  # the fast app's worker delivers both apps' jobs (one stream)
        [sent] = console_emails(capsys.readouterr().out)
        wrong, _ = await pair.post(app, VERIFY, {"email": email, "code": "000000"}, JSON)
        verified, solved = await pair.post(app, VERIFY, {"email": email, "code": sent.code}, JSON)
        assert solved is (app is pair.reference)
        assert verified.json() == {"status": "approved", "email": email}
        answers.append([comparable(r) for r in (accepted, cooldown, wrong)] + [verified.status_code])
    assert answers[0] == answers[1]
    assert answers[0][0][0] == 202
    assert answers[0][1][0] == 429
    assert answers[0][1][2]["retry-after"] == "60"


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b'{"email": ', JSON),  # not JSON
        (b"\xff\xfe", JSON),  # not UTF-8
        (b"", JSON),  # empty
        (b'{"email": 42}', JSON),  # wrong type
        (b'{"email": "a@example.org"}', {"content-type": "text/plain"}),
        (b'{"email": "a@example.org"}', {}),  # no content type
        (json.dumps({"email": "x" * 400 + "@example.org"}).encode(), JSON),  # too long for the model
    ],
)
async def test_what_the_model_refuses_gets_fastapis_own_answer(
    pair: Pair, body: bytes, headers: dict[str, str]
) -> None:
    fast, _ = await pair.post(pair.fast, SEND, body, headers)
    slow, _ = await pair.post(pair.reference, SEND, body, headers)
    assert comparable(fast) == comparable(slow)
    assert fast.status_code == 422
    assert fast.headers["content-type"] == "application/problem+json"
    assert fast.json()["code"] == "invalid_email"


async def test_a_body_over_the_limit_is_refused_before_any_handler(pair: Pair) -> None:
    email = unique_email()
    padded = b'{"email": "' + email.encode() + b'"' + b" " * 5000 + b"}"
    res, solved = await pair.post(pair.fast, SEND, padded, JSON)
    assert (res.status_code, res.json()["code"], solved) == (413, "payload_too_large", False)
    again, solved = await pair.post(pair.fast, SEND, {"email": email}, JSON)
    assert (again.status_code, solved) == (202, False)


async def test_a_body_in_several_chunks_is_joined(pair: Pair) -> None:
    chunks = [b'{"ema', b'il": "', unique_email().encode(), b'"}']
    incoming = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": SEND, "raw_path": SEND.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"otp.test"), (b"content-type", b"application/json; charset=utf-8")],
        "client": ("203.0.113.9", 5000), "server": ("otp.test", 80), "state": {STATE_KEY: pair.fast.web},
    }  # fmt: skip
    before = pair.solver.calls
    await pair.fast.app(scope, receive, send)
    assert sent[0]["status"] == 202
    assert pair.solver.calls == before
    answer = json.loads(sent[1]["body"])
    assert len(answer.pop("send_id")) == 22
    assert answer == {"status": "pending", "expires_in": 300, "resend_after": 60}


async def test_other_methods_and_paths_are_problems(pair: Pair) -> None:
    res = await pair.fast.http.get(SEND)
    assert res.status_code == 405
    assert res.headers["content-type"] == "application/problem+json"
    assert res.headers["allow"] == "POST"
    res = await pair.fast.http.post(SEND + "/", json={"email": unique_email()})
    assert res.status_code in (307, 404)


async def test_the_request_id_is_echoed_or_made(pair: Pair) -> None:
    res, _ = await pair.post(
        pair.fast, SEND, {"email": "x@mailinator.com"}, {**JSON, "x-request-id": "abc-123"}
    )
    assert res.headers["x-request-id"] == "abc-123"
    res, _ = await pair.post(
        pair.fast, SEND, {"email": "x@mailinator.com"}, {**JSON, "x-request-id": "bad id!"}
    )
    assert res.headers["x-request-id"] != "bad id!"
    assert len(res.headers["x-request-id"]) == 32


class _Broken:
    async def send(self, raw_email: str, client: str) -> Any:
        raise RuntimeError("a bug")


@contextlib.contextmanager
def broken_otp(app: FastAPI) -> Iterator[None]:
    async def broken() -> _Broken:
        return _Broken()

    app.dependency_overrides[get_otp_service] = broken  # FastAPI's override, honoured by both ways
    try:
        yield
    finally:
        app.dependency_overrides.clear()


async def test_an_unexpected_error_is_the_same_problem_500_both_ways(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    answers = []
    for app in (pair.fast, pair.reference):
        # Starlette re-raises after answering; this client takes the answer instead.
        transport = httpx.ASGITransport(
            app=app.http._transport.app, raise_app_exceptions=False, client=("203.0.113.7", 1)
        )
        with broken_otp(app.app):
            async with httpx.AsyncClient(transport=transport, base_url="http://otp.test") as http:
                answers.append(await http.post(SEND, content=b'{"email": "a@example.org"}', headers=JSON))
    assert comparable(answers[0]) == comparable(answers[1])
    assert answers[0].status_code == 500
    assert answers[0].json()["code"] == "internal_error"
    assert "a bug" not in answers[0].text
    assert sum(r.message == "http.unhandled_error" for r in caplog.records) == 2

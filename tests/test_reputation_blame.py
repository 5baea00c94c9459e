"""The reputation guard counts evidence and blames the client (CONTRACT §6), end to end: codes
sent through Resend (faked at the HTTP boundary) from clients behind a trusted proxy, Svix-signed
bounce and complaint events for them, the guard's check, and the admin blocks endpoints. On
Redis and on the embedded store (the blocks live in Redis, the send decision reads them there)."""

import itertools
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from otp_service.settings import Settings
from tests.support import drain, unique_email
from tests.test_remembered_sources import WIDE
from tests.test_resend_webhooks import SECRET, signed

SEND = "/api/v1/auth/otp/send"
VERIFY = "/api/v1/auth/otp/verify"
EVENTS = "/api/v1/auth/resend-events/"
PROXY = "203.0.113.7"  # the test client's address: the trusted proxy
ADMIN_KEY = "blame-admin-key-0123456789-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(params=["redis", "embedded"])
def store(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {} if request.param == "redis" else {"redis_url": None}


class Resend:
    """The fake Resend API: remembers who each message id went to, and the codes."""

    def __init__(self) -> None:
        self.to: dict[str, str] = {}  # message id -> recipient
        self.codes: dict[str, str] = {}  # recipient -> the last code emailed
        self._ids: Iterator[int] = itertools.count()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        message_id = f"re-{next(self._ids)}"
        body = json.loads(request.content)
        self.to[message_id] = body["to"][0]
        code = re.search(r"Your verification code is: (\d+)", body["text"])
        assert code is not None
        self.codes[body["to"][0]] = code[1]
        return httpx.Response(200, json={"id": message_id})

    def message_id(self, email: str) -> str:
        return next(m for m, to in self.to.items() if to == email)


@asynccontextmanager
async def resend_app(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path, **overrides: Any
) -> AsyncIterator[tuple[Any, Resend]]:
    settings = make_settings(
        # A database of this test's own: the shared one holds other tests' Resend deliveries.
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'otp.db'}",
        email_provider="resend", resend_api_key="re_test", resend_api_url="https://api.resend.test",
        resend_webhook_secret=SECRET, trusted_proxies=[f"{PROXY}/32"], conversion_min_sends=1_000_000,
        throttle_rates=WIDE, rate_limit_ttl=0, admin_api_keys=[ADMIN_KEY], **overrides,
    )  # fmt: skip
    fake = Resend()
    with respx.mock(using="httpx") as mock:
        mock.route(host="otp.test").pass_through()
        mock.post("https://api.resend.test/emails").mock(side_effect=fake)
        async with open_app(settings) as app:
            app.web.reputation.providers = ["resend"]
            yield app, fake


async def send(app: Any, email: str, ip: str) -> httpx.Response:
    res: httpx.Response = await app.http.post(SEND, json={"email": email}, headers={"x-forwarded-for": ip})
    return res


async def report(app: Any, fake: Resend, kind: str, email: str) -> None:
    """Resend tells us, genuinely signed, that the email to `email` bounced or was complained of."""
    now = datetime.now(UTC).isoformat()
    data: dict[str, Any] = {"email_id": fake.message_id(email), "to": [email], "from": "noreply@example.com",
                            "subject": "code", "created_at": now}  # fmt: skip
    if kind == "email.bounced":
        data["bounce"] = {"type": "Permanent", "subType": "General", "message": "no such user"}
    body, headers = signed({"type": kind, "created_at": now, "data": data})
    assert (await app.http.post(EVENTS, content=body, headers=headers)).status_code == 200


async def made_up_codes(app: Any, fake: Resend, ip: str, n: int = 3) -> None:
    """A client asks for codes at made-up addresses, and each bounces."""
    emails = [unique_email() for _ in range(n)]
    for email in emails:
        assert (await send(app, email, ip)).status_code == 202
    await drain(app)
    for email in emails:
        await report(app, fake, "email.bounced", email)


async def test_three_spellings_of_one_mailbox_complaining_from_three_subnets_pause_nothing(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """The attack: one free Outlook mailbox, three spellings, three /24s, "Report spam" on each.
    One mailbox is one piece of evidence, however it is spelled."""
    async with resend_app(
        open_app, make_settings, tmp_path, reputation_min_volume=1, reputation_min_sources=3,
        reputation_source_limit=3,
    ) as (app, fake):  # fmt: skip
        spellings = [f"att{id(app)}+{n}@outlook.com" for n in (1, 2, 3)]
        for n, email in enumerate(spellings, start=1):
            assert (await send(app, email, f"198.51.{n}.7")).status_code == 202
            await drain(app)  # each emailed before the next spelling's send
        for email in spellings:
            await report(app, fake, "email.complained", email)
        [health] = await app.web.reputation.check()
        assert not health.paused, health
        assert (health.complaints, health.evidence.complained_mailboxes) == (3, 1)
        assert (await send(app, unique_email(), "192.0.2.50")).status_code == 202  # a stranger


async def test_a_client_sending_to_made_up_addresses_is_blocked_and_its_neighbour_is_not(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path,
    store: dict[str, Any], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Carrier NAT: one /24, one client abusing it, a neighbour who verified from it."""
    caplog.set_level(logging.WARNING, logger="otp_service")
    async with resend_app(open_app, make_settings, tmp_path, reputation_source_limit=3, **store) as (
        app,
        fake,
    ):
        neighbour = unique_email()
        assert (await send(app, neighbour, "198.51.100.8")).status_code == 202
        await drain(app)
        verify = {"email": neighbour, "code": fake.codes[neighbour]}
        ok = await app.http.post(VERIFY, json=verify, headers={"x-forwarded-for": "198.51.100.8"})
        assert ok.status_code == 200
        await made_up_codes(app, fake, "198.51.100.7")
        await app.web.reputation.check()
        blocked = await send(app, unique_email(), "198.51.100.7")
        assert (blocked.status_code, blocked.json()["code"]) == (429, "rate_limited")
        assert int(blocked.headers["retry-after"]) > 86_000
        assert (await send(app, neighbour, "198.51.100.8")).status_code == 202  # remembered
        assert (await send(app, unique_email(), "198.51.100.8")).status_code == 202  # and any other address
        assert (await send(app, unique_email(), "198.51.100.9")).status_code == 202  # anyone else in the /24
        listed = (await app.http.get("/api/v1/admin/blocks", headers=ADMIN)).json()["items"]
        assert [(b["source"], b["kind"], b["events"]) for b in listed] == [("198.51.100.7/32", "client", 3)]
        assert datetime.fromisoformat(listed[0]["until"]) > datetime.fromisoformat(listed[0]["since"])
        await app.web.reputation.check()  # blocked once, logged and audited once
        audit = (await app.http.get("/api/v1/admin/audit", headers=ADMIN)).json()["items"]
    assert [(e["action"], e["key_fingerprint"], e["target"]) for e in audit] == [
        ("reputation.block", "reputation-guard", "198.51.100.7/32")
    ]
    assert [r.getMessage() for r in caplog.records].count("abuse.source_blocked") == 1


async def test_three_blocked_clients_block_their_subnet_until_an_operator_lifts_it(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path,
    store: dict[str, Any],
) -> None:  # fmt: skip
    async with resend_app(
        open_app, make_settings, tmp_path, reputation_source_limit=3, reputation_subnet_clients=3, **store
    ) as (app, fake):  # fmt: skip
        for host in (7, 8, 9):
            await made_up_codes(app, fake, f"198.51.100.{host}")
        await app.web.reputation.check()
        listed = (await app.http.get("/api/v1/admin/blocks", headers=ADMIN)).json()["items"]
        assert sorted((b["source"], b["kind"], b["events"]) for b in listed) == [
            ("198.51.100.0/24", "subnet", 9), ("198.51.100.7/32", "client", 3),
            ("198.51.100.8/32", "client", 3), ("198.51.100.9/32", "client", 3),
        ]  # fmt: skip
        assert (await send(app, unique_email(), "198.51.100.50")).status_code == 429  # the whole /24
        assert (await send(app, unique_email(), "198.51.101.50")).status_code == 202  # the next one

        lifted = await app.http.delete("/api/v1/admin/blocks/198.51.100.0/24", headers=ADMIN)
        assert lifted.status_code == 204
        assert (await send(app, unique_email(), "198.51.100.50")).status_code == 202
        await app.web.reputation.check()  # the blocked clients from before the lift do not count again
        assert (await send(app, unique_email(), "198.51.100.51")).status_code == 202
        assert (
            await app.http.delete("/api/v1/admin/blocks/198.51.100.7/32", headers=ADMIN)
        ).status_code == 204
        await app.web.reputation.check()  # nor do the client's own bounces from before its lift
        assert (await send(app, unique_email(), "198.51.100.7")).status_code == 202
        again = await app.http.delete("/api/v1/admin/blocks/198.51.100.7/32", headers=ADMIN)
        assert (again.status_code, again.json()["code"]) == (404, "not_found")
        listed = (await app.http.get("/api/v1/admin/blocks", headers=ADMIN)).json()["items"]
        assert sorted(b["source"] for b in listed) == ["198.51.100.8/32", "198.51.100.9/32"]
        audit = (await app.http.get("/api/v1/admin/audit", headers=ADMIN)).json()["items"]
    unblocks = [(e["target"], e["key_fingerprint"]) for e in audit if e["action"] == "reputation.unblock"]
    assert [target for target, _ in unblocks] == ["198.51.100.7/32", "198.51.100.0/24"]
    assert all(fingerprint not in ("reputation-guard", ADMIN_KEY) for _, fingerprint in unblocks)


async def test_an_ipv6_client_is_blocked_as_its_64(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with resend_app(open_app, make_settings, tmp_path, reputation_source_limit=3) as (app, fake):
        await made_up_codes(app, fake, "2001:db8:1:2::7")
        await app.web.reputation.check()
        listed = (await app.http.get("/api/v1/admin/blocks", headers=ADMIN)).json()["items"]
        assert [(b["source"], b["kind"]) for b in listed] == [("2001:db8:1:2::/64", "client")]
        assert (await send(app, unique_email(), "2001:db8:1:2::99")).status_code == 429  # the same /64
        assert (await send(app, unique_email(), "2001:db8:1:3::7")).status_code == 202
        res = await app.http.delete("/api/v1/admin/blocks/2001:db8:1:2::/64", headers=ADMIN)
        assert res.status_code == 204
        assert (await send(app, unique_email(), "2001:db8:1:2::99")).status_code == 202

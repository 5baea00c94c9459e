"""Abuse simulator (issue 12, run by hand): attack scenarios against a real `otp-service serve`
process on Redis and PostgreSQL, with the contract's default limits, while a legitimate population
signs in alongside. It counts the emails that reach the provider (Resend, faked on loopback: the
fake keeps each email, so the legitimate users read their codes from it) and the legitimate users'
success rate (one send and one verify each, from ordinary IPv4 and IPv6 clients).

    .venv/bin/python -m bench.abuse --minutes 1

Scenarios and targets:
  (a) one IPv6 /64 rotating addresses: at most 3 emails a minute;
  (b) one IPv6 /48 (every request from another /64 of it): at most 30 a minute;
  (c) 200 IPv4 addresses in 20 /24s, never verifying: once the guard engages (20 sends from a /24
      with under 10% verified), at most 6 an hour per /24;
  (d) sends to domains without MX (NXDOMAIN, null MX, no records): 0 provider calls;
  (e) one gmail inbox flooded under every spelling (+tags, dots, googlemail.com) from many
      networks: at most 10 emails to it (its daily cap), whatever the spelling;
  (f) a catch-all domain whose every code the attacker verifies, from two IPv6 /48s: at most
      OTP_DOMAIN_DAILY_LIMIT codes to the domain;
  (g) a targeted lockout: a user who has verified from home, attacked by 20 networks elsewhere
      with sends and wrong verifies for their address; the user signs in from home whenever their
      own cooldown allows: 100% of their sign-ins succeed on the first try;
  (h) scraping /metrics from outside: every scrape 401;
  (i) one complaint and nine bounces from one attacker subnet, once the provider has sent the
      guard's minimum volume (200; the old guard paused at one complaint between 200 and 1,249
      sends): the events come back as Svix-signed Resend webhooks; sending is never paused (the
      admin API's reputation report, read every second); each of the attacker's ten clients
      requested one of the sends, under OTP_REPUTATION_SOURCE_LIMIT, so nothing is blocked (§6 blocks
      clients first) and the evidence minimums (one subnet, nine mailboxes) keep the provider running;
  (j) +tag spellings at a company domain: the attacker asks for codes for alice+<n>@corp-j.example
      (it reads every email to a +tag spelling: a catch-all for tags it controls), now and then for
      alice@ itself (so that she has a live code it cannot read), tries every code it reads against
      alice@corp-j.example, and verifies each for its own spelling too (so that its /24s become
      remembered sources of alice's mailbox), while the real alice signs in from home (remembered),
      taking 20 s to type her code: 0 takeovers, none of alice@'s codes at a +tag spelling, alice
      100% through; (j') the same against a service with OTP_RESEND_STRATEGY=reuse, for 2 minutes
      (its first minute is the cooldown of alice's sign-in before the attack);
  (k) three +tag spellings of one Outlook mailbox, each asked for from a /24 of its own, complain
      (Svix-signed Resend `email.complained`), against a service whose guard would pause on three
      complaining mailboxes from three subnets (OTP_REPUTATION_MIN_VOLUME=10,
      OTP_REPUTATION_MIN_SOURCES=3; OTP_RATE_LIMIT_TTL=5 so that the three sends take seconds, not
      minutes): no provider paused;
  (l) a carrier-NAT /24 whose remembered users sign in while one client of it sends codes to
      made-up addresses that bounce (signed `email.bounced`): that client is blocked (429, about a
      day), the /24 is not (a new client of it still gets 202); then two more clients bounce, the
      /24 is blocked (OTP_REPUTATION_SUBNET_CLIENTS=3) and its remembered users still pass: 100%;
  (m) strangers spending a company domain's OTP_DOMAIN_DAILY_LIMIT (40 sends/s from 250 /24s)
      while its remembered users sign in, most after the limit is reached: strangers get 429
      domain_limit beyond it, remembered users 100% through;
  (n) guessing a test recipient's fixed code (OTP_TEST_RECIPIENTS) from one IPv6 /48, every request
      from another /64: the attacker sends to the address whenever its cooldown allows (each send
      starts a new lifetime of the code) and guesses in between: at most OTP_MAX_ATTEMPTS (5) wrong
      guesses counted per lifetime; after the 5th the fixed code itself answers code_expired;
  and in every scenario at least 99% of legitimate users succeed, every remembered user (ten of a
  pool of thirty who verified before the attacks, plus the scenario's own) signs in, and the admin
  API's reputation report, read every second, never shows a provider paused.

Scenarios run one after another in one service process (OTP_TEST_RECIPIENTS set for the whole run:
it adds one address and changes nothing else), except (j') and (k), each in a process of its own
with the settings above (a database and a Redis key prefix of its own; the legitimate population
and the remembered pool as in the main process).

Deliverability is on, against a DNS server on loopback (dnslib) that knows the legitimate
domains; the service trusts 127.0.0.1 as its proxy, so each request names its client in
X-Forwarded-For. Needs Redis and PostgreSQL as for the tests.
"""

import argparse
import asyncio
import base64
import contextlib
import ipaddress
import json
import math
import os
import random
import re
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from dnslib import MX, QTYPE, RCODE, RR, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer
from svix.webhooks import Webhook

from bench.run import create_db, drop_db, free_port, wait_ready

HERE = Path(__file__).resolve().parent
SEND, VERIFY = "/api/v1/auth/otp/send", "/api/v1/auth/otp/verify"
LEGIT_DOMAINS = ("mail.example", "inbox.example", "post.example")
LEGIT_PROVIDERS = ("gmail.com", "outlook.com", "qq.com", "yahoo.com", "icloud.com")
ZONE: dict[str, list[Any]] = {
    **{d: [MX(f"mx.{d}", 10)] for d in LEGIT_DOMAINS},
    "nullmx.example": [MX(".", 0)],
    "nothing.example": [TXT("v=spf1 -all")],
    "catchall.example": [MX("mx.catchall.example", 10)],
    "attacker.example": [MX("mx.attacker.example", 10)],
    **{
        d: [MX(f"mx.{d}", 10)]
        for d in ("corp-j.example", "corp-m.example", "bounce-l.example", "testcorp.example")
    },
}
VICTIM = "victim.person"  # (e) and (g): one inbox at gmail.com
HOME = "100.127.250.23"  # (g): the user's home network
CODE = re.compile(r"Your verification code is: (\d+)")
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"abuse-bench-webhook-secret-32by").decode()
ADMIN = {"authorization": "Bearer " + secrets.token_urlsafe(32)}
ATTACKER_NET = "198.22.7"  # (i): the subnet whose emails bounce and complain
# (j): alice at a company domain, her home, and the attacker's four /24s
CORP_J = "corp-j.example"
ALICE, ALICE_HOME = f"alice@{CORP_J}", "198.29.9.17"
J_NETS = [f"198.30.{i}" for i in range(4)]
# (k): three spellings of one Outlook mailbox, each from a /24 of its own
K_SPELLINGS = [("att+1@outlook.com", "198.31.1.7"), ("att+2@outlook.com", "198.31.2.7"),
               ("att+3@outlook.com", "198.31.3.7")]  # fmt: skip
# (l): a carrier-NAT /24 and its remembered users
CARRIER = "198.25.7"
CARRIER_USERS = [(f"carrier-{i}@{('gmail.com', 'outlook.com', 'yahoo.com')[i % 3]}", f"{CARRIER}.{10 + i}")
                 for i in range(10)]  # fmt: skip
# (m): a company domain and its remembered users, each from a /24 of their own
CORP_M = "corp-m.example"
CORP_USERS = [(f"staff-{i}@{CORP_M}", f"198.27.{i}.5") for i in range(10)]
# (n): a test recipient and its fixed code
TEST_RECIPIENT, TEST_CODE = "review@testcorp.example", "424242"
# every scenario: a pool of remembered users, each from an IPv4 /24 or IPv6 /48 of their own
POOL = [(f"member-{i}@{LEGIT_PROVIDERS[i % 5]}",
         f"198.28.{i}.9" if i % 2 else f"2001:db8:{0x2800 + i:x}::9") for i in range(30)]  # fmt: skip


class Zone(BaseResolver):  # type: ignore[misc]
    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        reply = request.reply()
        if name not in ZONE and not name.startswith("mx."):
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        if name.startswith("mx."):
            if qtype == "A":
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A("192.0.2.25"), ttl=60))
            return reply
        for rdata in ZONE[name]:
            if type(rdata).__name__ == qtype:
                reply.add_answer(RR(request.q.qname, QTYPE.reverse[qtype], rdata=rdata, ttl=60))
        return reply


@dataclass
class Provider:
    """The fake Resend: every email it took, by recipient."""

    emails: dict[str, list[str]] = field(default_factory=dict)
    ids: dict[str, list[str]] = field(default_factory=dict)  # the message ids it answered, by recipient
    calls: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls += 1
        for to in body["to"]:
            match = CODE.search(body.get("text", ""))
            self.emails.setdefault(to, []).append(match[1] if match else "")
            self.ids.setdefault(to, []).append(f"fake-{self.calls}")
        return web.json_response({"id": f"fake-{self.calls}"})

    def count(self, prefix: str) -> int:
        return sum(len(codes) for to, codes in self.emails.items() if to.startswith(prefix))


@dataclass
class Legit:
    tried: int = 0
    succeeded: int = 0
    failures: Counter[str] = field(default_factory=Counter)


def legit_ip(rng: random.Random) -> str:
    """An ordinary client: an IPv4 address in a /24 of its own, or an IPv6 address in a /48 of its own."""
    if rng.random() < 0.5:
        return str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("100.64.0.0")) + rng.randrange(1 << 22)))
    return str(
        ipaddress.IPv6Address((0x2001_0DB8_1000 << 80) | (rng.getrandbits(12) << 80) | rng.getrandbits(64))
    )


async def legit_population(
    http: httpx.AsyncClient, provider: Provider, stop: asyncio.Event, out: Legit
) -> None:
    rng = random.Random(7)

    async def one_user() -> None:
        # The public's addresses are at shared mail providers (exempt from the recipient-domain
        # cap, never looked up in DNS); three made-up domains would stand for thousands of
        # unrelated people and meet OTP_DOMAIN_DAILY_LIMIT within the run.
        email = f"user-{secrets.token_hex(5)}@{rng.choice(LEGIT_PROVIDERS)}"
        ip = legit_ip(rng)
        out.tried += 1
        res = await http.post(SEND, json={"email": email}, headers={"x-forwarded-for": ip})
        if res.status_code != 202:
            out.failures[f"send {res.status_code} {res.json().get('code')}"] += 1
            return
        deadline = time.monotonic() + 15
        while not provider.emails.get(email):
            if time.monotonic() > deadline:
                out.failures["no email within 15 s"] += 1
                return
            await asyncio.sleep(0.05)
        code = provider.emails[email][-1]
        res = await http.post(VERIFY, json={"email": email, "code": code}, headers={"x-forwarded-for": ip})
        if res.status_code == 200:
            out.succeeded += 1
        else:
            out.failures[f"verify {res.status_code} {res.json().get('code')}"] += 1

    users: set[asyncio.Task[None]] = set()
    while not stop.is_set():
        task = asyncio.create_task(one_user())
        users.add(task)
        task.add_done_callback(users.discard)
        await asyncio.sleep(0.2)  # 5 new users a second
    await asyncio.gather(*users)


async def attack(http: httpx.AsyncClient, stop: asyncio.Event, request: Callable[[int], tuple[str, str]],
                 rate: float, tally: Counter[str]) -> None:  # fmt: skip
    """`request(n)` gives the n-th attack send's (client IP, address); sent at `rate` per second."""

    async def one(n: int) -> None:
        ip, email = request(n)
        try:
            res = await http.post(SEND, json={"email": email}, headers={"x-forwarded-for": ip})
            tally[
                str(res.status_code) + " " + (res.json().get("code", "") if res.status_code != 202 else "")
            ] += 1
        except httpx.HTTPError as exc:
            tally[type(exc).__name__] += 1

    n = 0
    pending: set[asyncio.Task[None]] = set()
    started = time.monotonic()
    while not stop.is_set():
        task = asyncio.create_task(one(n))
        pending.add(task)
        task.add_done_callback(pending.discard)
        n += 1
        await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
    await asyncio.gather(*pending)


@dataclass
class Scenario:
    name: str
    target: str
    prefix: str  # attack addresses start with this
    request: Callable[[int], tuple[str, str]]
    rate: float
    judge: Callable[["Scenario", Provider, float], tuple[str, bool]]
    # A scenario's own moves beside the sends, run until the stop (a victim signing in, wrong
    # guesses, scrapes); it records what it saw in the scenario's `seen`.
    moves: Callable[[httpx.AsyncClient, Provider, asyncio.Event, "Scenario"], Any] | None = None
    seen: Counter[str] = field(default_factory=Counter)
    min_minutes: float = 0.0  # runs at least this long, whatever --minutes says
    service: str = "main"  # the service process it runs against (SERVICES)
    tally: Counter[str] = field(default_factory=Counter)  # the attack sends' answers
    started: float = 0.0


async def sign_in(http: httpx.AsyncClient, provider: Provider, email: str, ip: str, read: float = 0.0) -> str:
    """One sign-in: a send, the code from the newest email to the address (`read` seconds later),
    one verify. "ok", or what refused it."""
    before = len(provider.emails.get(email, []))
    res = await http.post(SEND, json={"email": email}, headers={"x-forwarded-for": ip})
    if res.status_code != 202:
        return f"send {res.status_code} {res.json().get('code')}"
    deadline = time.monotonic() + 15
    while len(provider.emails.get(email, [])) <= before:
        if time.monotonic() > deadline:
            return "no email within 15 s"
        await asyncio.sleep(0.05)
    await asyncio.sleep(read)
    code = provider.emails[email][-1]
    res = await http.post(VERIFY, json={"email": email, "code": code}, headers={"x-forwarded-for": ip})
    return "ok" if res.status_code == 200 else f"verify {res.status_code} {res.json().get('code')}"


async def remembered_sign_in(http: httpx.AsyncClient, provider: Provider, s: Scenario, email: str, ip: str,
                             read: float = 0.0) -> bool:  # fmt: skip
    """A remembered user signs in; counted in the scenario's remembered figures."""
    s.seen["remembered tried"] += 1
    result = await sign_in(http, provider, email, ip, read)
    if result == "ok":
        s.seen["remembered signed in"] += 1
    else:
        s.seen[f"remembered {email} from {ip}: {result}"] += 1
    return result == "ok"


async def pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(0.0, seconds))


async def provider_event(http: httpx.AsyncClient, kind: str, email: str, message_id: str) -> int:
    """Resend reports a bounce or complaint for one email: Svix-signed, to the service's webhook."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    data: dict[str, Any] = {"email_id": message_id, "from": "noreply@example.com", "to": [email],
                            "subject": "code", "created_at": now}  # fmt: skip
    if kind == "email.bounced":
        data["bounce"] = {"type": "Permanent", "subType": "General", "message": "no such user"}
    body = json.dumps({"type": kind, "created_at": now, "data": data})
    msg_id, when = f"msg_{secrets.token_hex(8)}", datetime.now(UTC)
    headers = {"svix-id": msg_id, "svix-timestamp": str(int(when.timestamp())),
               "svix-signature": Webhook(WEBHOOK_SECRET).sign(msg_id, when, body),
               "content-type": "application/json"}  # fmt: skip
    res = await http.post("/api/v1/auth/resend-events/", content=body, headers=headers)
    return res.status_code


async def emailed(provider: Provider, emails: list[str], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not all(provider.ids.get(e) for e in emails) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


def inbox(address: str) -> str:
    """(e) and (g): the gmail inbox an address reaches (what the service's mailbox key says)."""
    local, _, domain = address.partition("@")
    if domain not in ("gmail.com", "googlemail.com"):
        return address
    return local.split("+", 1)[0].replace(".", "") + "@gmail.com"


def victim_judge(s: Scenario, provider: Provider, minutes: float) -> tuple[str, bool]:
    emails = sum(
        len(codes) for to, codes in provider.emails.items() if inbox(to) == inbox(f"{VICTIM}@gmail.com")
    )
    return f"{emails} emails to the one inbox in {minutes:g} min", emails <= 10


def domain_judge(s: Scenario, provider: Provider, minutes: float) -> tuple[str, bool]:
    emails = sum(len(codes) for to, codes in provider.emails.items() if to.endswith("@catchall.example"))
    verified = s.seen["verified 200"]
    return (
        f"{emails} codes to the domain in {minutes:g} min, {verified} verified by the attacker",
        emails <= 1000,
    )


def lockout_judge(s: Scenario, provider: Provider, minutes: float) -> tuple[str, bool]:
    tried, ok = s.seen["victim tried"], s.seen["victim signed in"]
    return (f"the victim signed in {ok}/{tried} times on the first try; attacker: {s.seen['wrong verifies']} wrong "
            f"guesses"), tried > 0 and ok == tried  # fmt: skip


def metrics_judge(s: Scenario, provider: Provider, minutes: float) -> tuple[str, bool]:
    scrapes = {k: v for k, v in s.seen.items() if k.startswith("scrape ")}
    return f"scrapes answered {scrapes}", set(scrapes) == {"scrape 401"}


async def catchall_verifier(
    http: httpx.AsyncClient, provider: Provider, stop: asyncio.Event, s: Scenario
) -> None:
    """(f) the attacker reads every code the domain receives and verifies it."""
    done: set[str] = set()
    while not stop.is_set():
        for to, codes in list(provider.emails.items()):
            if to.endswith("@catchall.example") and to not in done and codes:
                done.add(to)
                res = await http.post(VERIFY, json={"email": to, "code": codes[-1]},
                                      headers={"x-forwarded-for": "2001:db8:c:1::1"})  # fmt: skip
                s.seen[f"verified {res.status_code}"] += 1
        await asyncio.sleep(0.2)


async def victim_and_guesser(
    http: httpx.AsyncClient, provider: Provider, stop: asyncio.Event, s: Scenario
) -> None:
    """(g) the victim verified from home once before the attack; signs in from home (one send,
    then the code from the latest email, one verify) as soon as the attack starts and again each
    time their own cooldown allows, while 20 networks send and guess wrong."""
    victim = f"{VICTIM}@gmail.com"

    async def sign_in() -> bool:
        before = len(provider.emails.get(victim, []))
        res = await http.post(SEND, json={"email": victim}, headers={"x-forwarded-for": HOME})
        if res.status_code != 202:
            s.seen[f"victim send {res.status_code} {res.json().get('code')}"] += 1
            return False
        deadline = time.monotonic() + 15
        while len(provider.emails.get(victim, [])) <= before:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        code = provider.emails[victim][-1]
        res = await http.post(VERIFY, json={"email": victim, "code": code}, headers={"x-forwarded-for": HOME})
        return res.status_code == 200

    async def guesses() -> None:
        n = 0
        while not stop.is_set():
            ip = f"198.51.{100 + n % 20}.{1 + n % 200}"
            await http.post(VERIFY, json={"email": victim, "code": f"{n % 1_000_000:06d}"},
                            headers={"x-forwarded-for": ip})  # fmt: skip
            s.seen["wrong verifies"] += 1
            n += 1
            await asyncio.sleep(0.1)

    guessing = asyncio.create_task(guesses())
    try:
        while not stop.is_set():
            s.seen["victim tried"] += 1
            s.seen["remembered tried"] += 1
            if await sign_in():
                s.seen["victim signed in"] += 1
                s.seen["remembered signed in"] += 1
            with contextlib.suppress(TimeoutError):  # the user's own cooldown (60 s), then again
                await asyncio.wait_for(stop.wait(), 61)
    finally:
        guessing.cancel()


async def outside_scraper(
    http: httpx.AsyncClient, provider: Provider, stop: asyncio.Event, s: Scenario
) -> None:
    """(h) someone outside scrapes /metrics, sends, and scrapes again."""
    while not stop.is_set():
        res = await http.get("/metrics", headers={"x-forwarded-for": "203.0.113.99"})
        s.seen[f"scrape {res.status_code}"] += 1
        await asyncio.sleep(0.5)


async def complaint_and_bounces(
    http: httpx.AsyncClient, provider: Provider, stop: asyncio.Event, s: Scenario
) -> None:
    """(i) once the provider has sent the guard's minimum volume, one subnet asks for a code at the
    attacker's own mailbox and at nine made-up ones; Resend reports nine bounces and one complaint
    (Svix-signed, to the service's webhook). Meanwhile the admin API's reputation report is read
    every second: a pause at any moment misses the target."""

    async def watch() -> None:
        while not stop.is_set():
            res = await http.get("/api/v1/admin/reputation", headers=ADMIN)
            for health in res.json():
                s.seen["reports"] += 1
                s.seen["paused reports"] += bool(health["paused"])
                s.seen["last sent"], s.seen["last bounces"] = health["sent"], health["bounces"]
                s.seen["last complaints"] = health["complaints"]
            await asyncio.sleep(1)

    watching = asyncio.create_task(watch())
    try:
        while provider.calls < 200 and not stop.is_set():
            await asyncio.sleep(0.5)
        s.seen["volume before the attack"] = provider.calls
        print(f"  (i): the provider has sent {provider.calls} emails; the attack starts", flush=True)
        own, made_up = "atk-i-own@attacker.example", [f"atk-i-{n}@attacker.example" for n in range(9)]
        for n, email in enumerate([own, *made_up]):
            res = await http.post(
                SEND, json={"email": email}, headers={"x-forwarded-for": f"{ATTACKER_NET}.{1 + n}"}
            )
            s.seen[f"attack send {res.status_code}"] += 1
        deadline = time.monotonic() + 15
        while not all(provider.ids.get(e) for e in [own, *made_up]) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for email in [own, *made_up]:
            for message_id in provider.ids.get(email, []):
                kind = "email.complained" if email == own else "email.bounced"
                s.seen[f"{kind} {await provider_event(http, kind, email, message_id)}"] += 1
        # Each of the ten clients requested one of the sends behind the events, under
        # OTP_REPUTATION_SOURCE_LIMIT (3): §6 blocks a client at its limit and a subnet only once
        # OTP_REPUTATION_SUBNET_CLIENTS of its clients are, so nothing is blocked, and only the
        # evidence minimums (one subnet, nine bounced mailboxes) keep the provider running. The
        # block list is read after each of the guard's checks (every 30 s) until the end.
        while not stop.is_set():
            res = await http.get("/api/v1/admin/blocks", headers=ADMIN)
            for item in res.json()["items"]:
                s.seen[f"blocked {item['kind']} {item['source']}"] = 1
            await pause(stop, 5)
        await stop.wait()
    finally:
        watching.cancel()


def reputation_judge(s: Scenario, provider: Provider, minutes: float) -> tuple[str, bool]:
    seen = s.seen
    blocked = sorted(k[len("blocked ") :] for k in seen if k.startswith("blocked "))
    text = (f"{seen['email.bounced 200']} bounces and {seen['email.complained 200']} complaint accepted after "
            f"{seen['volume before the attack']} emails; paused in {seen['paused reports']} of {seen['reports']} "
            f"reputation reports (last: {seen['last sent']} sent, {seen['last bounces']} bounces and "
            f"{seen['last complaints']} complaints counted); blocked: {', '.join(blocked) or 'nothing'} (one event "
            f"per client, under OTP_REPUTATION_SOURCE_LIMIT)")  # fmt: skip
    ok = (seen["paused reports"] == 0 and seen["reports"] > 0 and not blocked
          and seen["email.bounced 200"] == 9 and seen["email.complained 200"] == 1)  # fmt: skip
    return text, ok


async def plus_tag_takeover(
    http: httpx.AsyncClient, provider: Provider, stop: asyncio.Event, s: Scenario
) -> None:
    """(j) the attacker asks for codes for alice+<n>@corp-j.example from four /24s (two requests a
    second; one in ten for alice@ herself, which it cannot read, so that she has a live code), reads
    every email to a +tag spelling, tries each code against alice@, then verifies it for its own
    spelling (which makes that /24 a remembered source of alice's mailbox, with a cooldown of its
    own: more codes to try). The real alice signs in from home whenever her own cooldown allows,
    taking 20 s to read and type her code (so that it is live while the attacker asks)."""
    tried: set[tuple[str, str]] = set()

    async def alice() -> None:
        while not stop.is_set():
            started = time.monotonic()
            s.seen["alice tried"] += 1
            if await remembered_sign_in(http, provider, s, ALICE, ALICE_HOME, read=20):
                s.seen["alice signed in"] += 1
            await pause(stop, started + 61 - time.monotonic())

    async def sender() -> None:
        n = 0
        while not stop.is_set():
            email = ALICE if n % 10 == 5 else f"alice+{n}@{CORP_J}"
            ip = f"{J_NETS[n % 4]}.{1 + (n // 4) % 100}"
            res = await http.post(SEND, json={"email": email}, headers={"x-forwarded-for": ip})
            answer = str(res.status_code) + (
                "" if res.status_code == 202 else " " + res.json().get("code", "")
            )
            s.tally[("alice@ " if email == ALICE else "+tag ") + answer] += 1
            n += 1
            await pause(stop, 0.5)

    async def reader(final: bool = False) -> None:
        k = 0
        while not stop.is_set() or final:
            for to, codes in list(provider.emails.items()):
                if not (to.startswith("alice+") and to.endswith("@" + CORP_J)):
                    continue
                for code in codes:
                    if (to, code) in tried:
                        continue
                    tried.add((to, code))
                    net = J_NETS[int(to[6:].split("@")[0]) % 4]
                    ip = f"{net}.{101 + k % 100}"
                    k += 1
                    res = await http.post(
                        VERIFY, json={"email": ALICE, "code": code}, headers={"x-forwarded-for": ip}
                    )
                    s.seen["codes read and tried against alice@"] += 1
                    s.seen[
                        f"alice@ verify {res.status_code} {res.json().get('code', res.json().get('status'))}"
                    ] += 1
                    if res.status_code == 200:
                        s.seen["takeovers"] += code not in provider.emails.get(ALICE, [])
                        s.seen["verified as alice@ with a code also emailed to her"] += (
                            code in provider.emails.get(ALICE, [])
                        )
                    res = await http.post(
                        VERIFY, json={"email": to, "code": code}, headers={"x-forwarded-for": ip}
                    )
                    s.seen[f"own spelling verify {res.status_code}"] += 1
            if final:
                return
            await asyncio.sleep(0.2)

    await asyncio.gather(alice(), sender(), reader())
    await asyncio.sleep(2)  # the last codes reach the provider; the attacker tries them too
    await reader(final=True)


def takeover_judge(s: Scenario, provider: Provider, minutes: float) -> tuple[str, bool]:
    alice_codes = set(provider.emails.get(ALICE, []))
    tag_codes = [(to, c) for to, codes in provider.emails.items()
                 if to.startswith("alice+") and to.endswith("@" + CORP_J) for c in codes]  # fmt: skip
    leaks = sum(c in alice_codes for _, c in tag_codes)
    answers = {k[len("alice@ verify ") :]: v for k, v in s.seen.items() if k.startswith("alice@ verify ")}
    text = (f"{len(tag_codes)} codes emailed to {len({t for t, _ in tag_codes})} +tag spellings, each tried "
            f"against alice@: {s.seen['takeovers']} takeovers (answers {answers}); attacker verified its own "
            f"spelling {s.seen['own spelling verify 200']} times; {leaks} of alice@'s {len(alice_codes)} codes "
            f"reached a +tag spelling; alice signed in {s.seen['alice signed in']}/{s.seen['alice tried']}")  # fmt: skip
    ok = (s.seen["takeovers"] == 0 and leaks == 0 and s.seen["alice tried"] > 0
          and s.seen["alice signed in"] == s.seen["alice tried"] and len(tag_codes) > 0)  # fmt: skip
    return text, ok


async def spellings_complain(
    http: httpx.AsyncClient, provider: Provider, stop: asyncio.Event, s: Scenario
) -> None:
    """(k) three +tag spellings of one Outlook mailbox, each asked for from a /24 of its own (the
    cooldown, 5 s in this service, apart), each email complained about."""
    for email, ip in K_SPELLINGS:
        while not stop.is_set():
            res = await http.post(SEND, json={"email": email}, headers={"x-forwarded-for": ip})
            if res.status_code == 202:
                break
            s.seen[f"attack send {res.status_code} {res.json().get('code')}"] += 1
            await pause(stop, 1)
        s.seen["attack send 202"] += 1
        await emailed(provider, [email])
        await pause(stop, 5.5)
    s.seen["volume before the complaints"] = provider.calls
    for email, _ in K_SPELLINGS:
        for message_id in provider.ids.get(email, []):
            s.seen[
                f"email.complained {await provider_event(http, 'email.complained', email, message_id)}"
            ] += 1
    s.seen["complaints sent at (s)"] = int(time.monotonic() - s.started)
    await stop.wait()


def spellings_judge(s: Scenario, provider: Provider, minutes: float) -> tuple[str, bool]:
    seen = s.seen
    text = (f"{seen['email.complained 200']} complaints accepted (after {seen['volume before the complaints']} "
            f"emails, {seen['complaints sent at (s)']} s in); paused in {seen['rep paused']} of {seen['rep reports']} "
            f"reputation reports; last report: {seen['rep sent']} sent, {seen['rep complaints']} complaints counted "
            f"from {seen['rep complained_mailboxes']} mailbox(es) and {seen['rep complained_subnets']} subnets")  # fmt: skip
    ok = seen["email.complained 200"] == 3 and seen["rep paused"] == 0 and seen["rep reports"] > 0
    return text, ok


async def admin_blocks(http: httpx.AsyncClient) -> dict[str, str]:
    res = await http.get("/api/v1/admin/blocks", headers=ADMIN)
    return {item["source"]: item["kind"] for item in res.json()["items"]}


async def carrier_nat(http: httpx.AsyncClient, provider: Provider, stop: asyncio.Event, s: Scenario) -> None:
    """(l) the /24's ten remembered users sign in one every 11 s, while one client of it sends
    three codes to made-up addresses that bounce; once the guard has blocked it (the admin block
    list, read every second: polling with sends would spend the /24's own send rate), its next
    send and a new client's send; then two more clients do the same, until the /24 is blocked."""

    async def members() -> None:
        for email, ip in CARRIER_USERS:
            if stop.is_set():
                return
            s.seen["carrier users tried"] += 1
            s.seen["carrier users signed in"] += await remembered_sign_in(http, provider, s, email, ip)
            await pause(stop, 11)

    async def bounce(client: str, tag: str) -> None:
        emails = [f"nobody-{tag}-{j}@bounce-l.example" for j in range(3)]
        for email in emails:
            res = await http.post(SEND, json={"email": email}, headers={"x-forwarded-for": client})
            s.tally[str(res.status_code)] += 1
        await emailed(provider, emails)
        for email in emails:
            for message_id in provider.ids.get(email, []):
                s.seen[f"email.bounced {await provider_event(http, 'email.bounced', email, message_id)}"] += 1

    async def until_listed(source: str, timeout: float = 75) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not stop.is_set():
            blocks = await admin_blocks(http)
            if source in blocks:
                return blocks
            await asyncio.sleep(1)
        return {}

    async def try_send(client: str, email: str, label: str) -> None:
        res = await http.post(SEND, json={"email": email}, headers={"x-forwarded-for": client})
        wait = int(res.headers.get("retry-after", 0))
        s.seen[f"{label}: {res.status_code} {res.json().get('code', '')} retry-after {wait}"] += 1
        s.seen[f"{label} status"] = res.status_code
        s.seen[f"{label} retry-after"] = wait

    async def attack() -> None:
        first = time.monotonic()
        await bounce(f"{CARRIER}.200", "1")
        blocks = await until_listed(f"{CARRIER}.200/32")
        s.seen["first client blocked"] = f"{CARRIER}.200/32" in blocks
        s.seen["/24 blocked with one client"] = f"{CARRIER}.0/24" in blocks
        await try_send(f"{CARRIER}.150", f"new-{secrets.token_hex(4)}@gmail.com", "a new client of the /24")

        async def next_send() -> None:  # once its own 3/minute allows, so that the answer is the block's
            await pause(stop, first + 62 - time.monotonic())
            await try_send(f"{CARRIER}.200", "nobody-1-later@bounce-l.example", "blocked client's next send")

        await asyncio.gather(next_send(), bounce(f"{CARRIER}.201", "2"), bounce(f"{CARRIER}.202", "3"))
        blocks = await until_listed(f"{CARRIER}.0/24", timeout=100)
        s.seen["/24 blocked after three clients"] = f"{CARRIER}.0/24" in blocks
        if blocks:
            await try_send(
                f"{CARRIER}.151", f"new-{secrets.token_hex(4)}@gmail.com", "a new client, /24 blocked"
            )

    await asyncio.gather(members(), attack())
    await stop.wait()


def carrier_judge(s: Scenario, provider: Provider, minutes: float) -> tuple[str, bool]:
    seen = s.seen
    text = (f"{seen['email.bounced 200']} bounces accepted; the bouncing client "
            f"{'blocked' if seen['first client blocked'] else 'NOT blocked'} (its next send "
            f"{seen['blocked client' + chr(39) + 's next send status']}, Retry-After "
            f"{seen['blocked client' + chr(39) + 's next send retry-after']} s), the /24 "
            f"{'blocked too' if seen['/24 blocked with one client'] else 'not'} (a new client of it: "
            f"{seen['a new client of the /24 status']}); after two more bouncing clients the /24 "
            f"{'blocked' if seen['/24 blocked after three clients'] else 'NOT blocked'} (a new client: "
            f"{seen['a new client, /24 blocked status']}); its remembered users signed in "
            f"{seen['carrier users signed in']}/{seen['carrier users tried']}")  # fmt: skip
    ok = (seen["first client blocked"] == 1 and seen["/24 blocked with one client"] == 0
          and seen["blocked client's next send status"] == 429 and seen["a new client of the /24 status"] == 202
          and seen["carrier users tried"] > 0 and seen["carrier users signed in"] == seen["carrier users tried"])  # fmt: skip
    return text, ok


async def domain_members(
    http: httpx.AsyncClient, provider: Provider, stop: asyncio.Event, s: Scenario
) -> None:
    """(m) two of the domain's remembered users sign in early; the other eight once strangers are
    answered domain_limit (or after 50 s), 1.5 s apart."""
    for email, ip in CORP_USERS[:2]:
        s.seen["staff tried"] += 1
        s.seen["staff signed in"] += await remembered_sign_in(http, provider, s, email, ip)
    deadline = time.monotonic() + 50
    while not s.tally["429 domain_limit"] and time.monotonic() < deadline and not stop.is_set():
        await asyncio.sleep(0.5)
    s.seen["domain_limit reached"] = bool(s.tally["429 domain_limit"])

    async def late(i: int, email: str, ip: str) -> None:
        await asyncio.sleep(1.5 * i)
        after = s.tally["429 domain_limit"] > 0
        s.seen["staff tried"] += 1
        s.seen["staff tried after the limit"] += after
        ok = await remembered_sign_in(http, provider, s, email, ip)
        s.seen["staff signed in"] += ok
        s.seen["staff signed in after the limit"] += ok and after

    await asyncio.gather(*(late(i, e, ip) for i, (e, ip) in enumerate(CORP_USERS[2:])))
    await stop.wait()


def domain_limit_judge(s: Scenario, provider: Provider, minutes: float) -> tuple[str, bool]:
    strangers = provider.count("stranger-")
    seen = s.seen
    text = (f"{strangers} codes to strangers at the domain (its 10 remembered users' first sign-ins had "
            f"counted 10 of the 1,000), then {s.tally['429 domain_limit']} sends answered 429 domain_limit "
            f"(answers {dict(s.tally)}); remembered users {seen['staff signed in']}/{seen['staff tried']}, "
            f"{seen['staff signed in after the limit']}/{seen['staff tried after the limit']} after the limit")  # fmt: skip
    ok = (strangers <= 1000 and s.tally["429 domain_limit"] > 0 and seen["staff tried after the limit"] > 0
          and seen["staff signed in"] == seen["staff tried"])  # fmt: skip
    return text, ok


async def test_code_guesser(
    http: httpx.AsyncClient, provider: Provider, stop: asyncio.Event, s: Scenario
) -> None:
    """(n) one IPv6 /48, every request from another /64: a send to the test recipient (a new
    lifetime of its fixed code) whenever the cooldown allows, then wrong guesses one at a time
    (never the fixed code) until the code is refused, then the fixed code itself, then a wrong
    guess a second until the next send."""
    base = int(ipaddress.IPv6Address("2001:db8:d::"))
    rng = random.Random(13)
    k = 0

    def ip() -> str:
        nonlocal k
        k += 1
        return str(ipaddress.IPv6Address(base + (k << 64) + 1))

    async def verify(code: str) -> tuple[int, str]:
        res = await http.post(
            VERIFY, json={"email": TEST_RECIPIENT, "code": code}, headers={"x-forwarded-for": ip()}
        )
        body = res.json()
        return res.status_code, str(body.get("code", body.get("status")))

    def guess() -> str:
        while (code := f"{rng.randrange(1_000_000):06d}") == TEST_CODE:
            pass
        return code

    lifetime = 0
    while not stop.is_set():
        res = await http.post(SEND, json={"email": TEST_RECIPIENT}, headers={"x-forwarded-for": ip()})
        sent = time.monotonic()
        if res.status_code != 202:
            s.tally[f"{res.status_code} {res.json().get('code')}"] += 1
            await pause(stop, float(res.headers.get("retry-after", 1)))
            continue
        s.tally["202"] += 1
        lifetime += 1
        while not stop.is_set():
            status, code = await verify(guess())
            s.seen[f"guess answered {status} {code}"] += 1
            if code in ("invalid_code", "max_attempts_reached"):
                s.seen[f"lifetime {lifetime} wrong guesses counted"] += 1
            if code != "invalid_code":
                break
        if stop.is_set():
            break
        status, code = await verify(TEST_CODE)
        s.seen[f"fixed code after the burn answered {status} {code}"] += 1
        while not stop.is_set() and time.monotonic() < sent + 61:
            status, code = await verify(guess())
            s.seen[f"guess answered {status} {code}"] += 1
            if code in ("invalid_code", "max_attempts_reached"):
                s.seen[f"lifetime {lifetime} wrong guesses counted"] += 1
            await pause(stop, 1)
    s.seen["lifetimes"] = lifetime


def test_code_judge(s: Scenario, provider: Provider, minutes: float) -> tuple[str, bool]:
    per = [s.seen[f"lifetime {n} wrong guesses counted"] for n in range(1, s.seen["lifetimes"] + 1)]
    guesses = {k[len("guess answered ") :]: v for k, v in s.seen.items() if k.startswith("guess answered ")}
    fixed = {k[len("fixed code after the burn answered "):]: v for k, v in s.seen.items()
             if k.startswith("fixed code after the burn answered ")}  # fmt: skip
    emails = len(provider.emails.get(TEST_RECIPIENT, []))
    text = (f"{s.seen['lifetimes']} lifetimes (sends {dict(s.tally)}), wrong guesses counted per lifetime {per} "
            f"of {sum(guesses.values())} guesses (answers {guesses}); the fixed code after the 5th wrong guess "
            f"answered {fixed}; {emails} emails to the address")  # fmt: skip
    ok = bool(per) and max(per) <= 5 and set(fixed) == {"400 code_expired"} and emails == 0
    return text, ok


def per_minute(limit: float) -> Callable[[Scenario, Provider, float], tuple[str, bool]]:
    def judge(s: Scenario, provider: Provider, minutes: float) -> tuple[str, bool]:
        # A rolling minute admits `limit`: a run of m minutes, each started minute its own window,
        # admits at most limit x ceil(m) (dividing by m would misread a run of 1.1 minutes).
        emails = provider.count(s.prefix)
        allowed = limit * math.ceil(minutes - 1e-9)
        return f"{emails} emails in {minutes:.2f} min (at most {allowed:g} allowed)", emails <= allowed

    return judge


def guard_judge(s: Scenario, provider: Provider, minutes: float) -> tuple[str, bool]:
    per_24: Counter[str] = Counter()
    for to, codes in provider.emails.items():
        if to.startswith(s.prefix):
            per_24[to.split("-")[2]] += len(codes)
    # Before the guard engages a /24 may send its 20 (OTP_CONVERSION_MIN_SENDS); after, 6 an hour.
    after = {net: max(0, n - 20) for net, n in per_24.items()}
    worst = max(after.values(), default=0)
    hours = max(minutes / 60, 1 / 60)
    text = (f"{sum(per_24.values())} emails to {len(per_24)} /24s in {minutes:g} min; after the guard engaged, "
            f"at most {worst} from one /24 ({worst / hours:.0f}/h)")  # fmt: skip
    return text, worst <= 6


def no_mx_judge(s: Scenario, provider: Provider, minutes: float) -> tuple[str, bool]:
    emails = provider.count(s.prefix)
    return f"{emails} provider calls for undeliverable domains", emails == 0


def scenarios() -> list[Scenario]:
    rng = random.Random(11)
    v6_64 = int(ipaddress.IPv6Address("2001:db8:a:1::"))
    v6_48 = int(ipaddress.IPv6Address("2001:db8:b::"))
    v6_48c = int(ipaddress.IPv6Address("2001:db8:c::"))
    v4_nets = [f"198.18.{i}" for i in range(20)]
    no_mx = ["nullmx.example", "nothing.example", "no-such-domain-{}.example"]
    return [
        # First: the old guard's weak spot is a provider just past its minimum volume.
        Scenario("(i) one complaint and nine bounces from one subnet", "sending never paused", "atk-i-",
                 lambda n: ("", ""), 0, reputation_judge, complaint_and_bounces, min_minutes=1.75),
        Scenario("(a) one IPv6 /64, rotating addresses", "at most 3 emails a minute", "atk-a-",
                 lambda n: (str(ipaddress.IPv6Address(v6_64 + rng.getrandbits(64))), f"atk-a-{n}@mail.example"),
                 20, per_minute(3)),
        Scenario("(b) one IPv6 /48, every request from another /64", "at most 30 emails a minute", "atk-b-",
                 lambda n: (str(ipaddress.IPv6Address(v6_48 + (rng.getrandbits(16) << 64) + rng.getrandbits(64))),
                            f"atk-b-{n}@mail.example"),
                 20, per_minute(30)),
        Scenario("(c) 200 IPv4 addresses in 20 /24s, never verifying", "at most 6 an hour per /24 once the guard engages",
                 "atk-c-",
                 lambda n: (f"{v4_nets[n % 20]}.{1 + (n // 20) % 10}", f"atk-c-{n % 20}-{n}@mail.example"),
                 20, guard_judge),
        Scenario("(d) domains without MX", "0 provider calls", "atk-d-",
                 lambda n: (f"198.19.{n % 250}.{1 + n % 200}", f"atk-d-{n}@" + no_mx[n % 3].format(n)),
                 20, no_mx_judge),
        Scenario("(e) one inbox under every spelling, from many networks", "at most 10 emails to it", "victim",
                 lambda n: (f"198.20.{n % 250}.{1 + n % 200}", spelling(n)), 20, victim_judge),
        Scenario("(f) a catch-all domain, every code verified, two IPv6 /48s",
                 "at most OTP_DOMAIN_DAILY_LIMIT codes to the domain", "atk-f-",
                 lambda n: (str(ipaddress.IPv6Address((v6_48 if n % 2 else v6_48c) + (rng.getrandbits(16) << 64) + 1)),
                            f"atk-f-{n}@catchall.example"),
                 20, domain_judge, catchall_verifier),
        Scenario("(g) a targeted lockout of a user who verified from home", "100% of the user's sign-ins succeed",
                 "victim", lambda n: (f"198.51.{100 + n % 20}.{1 + n % 200}", f"{VICTIM}@gmail.com"), 2,
                 lockout_judge, victim_and_guesser),
        Scenario("(h) /metrics scraped from outside", "every scrape 401", "atk-h-",
                 lambda n: (f"198.21.{n % 250}.1", f"atk-h-{n}@mail.example"), 1, metrics_judge, outside_scraper),
        Scenario("(j) +tag spellings of alice@ at a company domain, every code tried against alice@",
                 "0 takeovers; alice 100% through", "alice+", lambda n: ("", ""), 0, takeover_judge,
                 plus_tag_takeover),
        Scenario("(j') the same under OTP_RESEND_STRATEGY=reuse", "0 takeovers; alice 100% through", "alice+",
                 lambda n: ("", ""), 0, takeover_judge, plus_tag_takeover, min_minutes=2.0, service="reuse"),
        Scenario("(k) three spellings of one Outlook mailbox complain, from three /24s", "no provider paused",
                 "att+", lambda n: ("", ""), 0, spellings_judge, spellings_complain, min_minutes=1.5,
                 service="lowered"),
        Scenario("(l) a carrier-NAT /24: one client's codes bounce while its remembered users sign in",
                 "the client blocked, not the /24; remembered users 100% through", "nobody-",
                 lambda n: ("", ""), 0, carrier_judge, carrier_nat, min_minutes=2.0),
        Scenario("(m) strangers spend a company domain's OTP_DOMAIN_DAILY_LIMIT while its remembered users sign in",
                 "strangers 429 domain_limit beyond it; remembered users 100% through", "stranger-",
                 lambda n: (f"198.26.{n % 250}.{1 + (n // 250) % 250}", f"stranger-{n}@{CORP_M}"), 40,
                 domain_limit_judge, domain_members),
        Scenario("(n) a test recipient's fixed code guessed from one IPv6 /48, every request from another /64",
                 "at most OTP_MAX_ATTEMPTS (5) wrong guesses per lifetime of the code", "review@",
                 lambda n: ("", ""), 0, test_code_judge, test_code_guesser),
    ]  # fmt: skip


def spelling(n: int) -> str:
    """(e) the n-th spelling of the victim's inbox."""
    dotted = VICTIM.replace(".", "")
    local = dotted[: 1 + n % (len(dotted) - 1)] + "." + dotted[1 + n % (len(dotted) - 1) :]
    return f"{local}+{n}@{'googlemail.com' if n % 2 else 'gmail.com'}"


# The service processes: each with a database and a Redis key prefix of its own; the settings each
# adds to the contract's defaults.
SERVICES: dict[str, dict[str, str]] = {
    # One test recipient more changes nothing the other scenarios measure.
    "main": {"OTP_TEST_RECIPIENTS": json.dumps({TEST_RECIPIENT: TEST_CODE})},
    "reuse": {"OTP_RESEND_STRATEGY": "reuse"},
    # A guard that would pause on three complaining mailboxes from three subnets; a short cooldown
    # so that the three spellings' sends take seconds.
    "lowered": {
        "OTP_REPUTATION_MIN_VOLUME": "10",
        "OTP_REPUTATION_MIN_SOURCES": "3",
        "OTP_RATE_LIMIT_TTL": "5",
    },
}


async def signed_in_before(http: httpx.AsyncClient, provider: Provider) -> None:
    """Before any attack: the remembered users verify once from where they will sign in again
    (the victim of (g), alice of (j), the carrier /24's users of (l), the domain's of (m), the
    pool), so that each (mailbox, subnet) is a remembered source."""
    users = [(f"{VICTIM}@gmail.com", HOME), (ALICE, ALICE_HOME), *CARRIER_USERS, *CORP_USERS, *POOL]
    results = await asyncio.gather(*(sign_in(http, provider, email, ip) for email, ip in users))
    failed = [(u, r) for u, r in zip(users, results, strict=True) if r != "ok"]
    assert not failed, f"remembered users could not sign in before the attacks: {failed}"
    for email, _ in users:  # the scenarios read the newest email
        provider.emails.pop(email, None)


@contextlib.asynccontextmanager
async def service(name: str, dns_port: int, log: Path) -> Any:
    """A real `otp-service serve` with its own database, Redis prefix and fake Resend."""
    db = f"otp_abuse_{secrets.token_hex(4)}"
    prefix = f"otpabuse{secrets.token_hex(4)}"
    await create_db(db)
    provider = Provider()
    fake = web.Application()
    fake.router.add_post("/emails", provider.handle)
    runner = web.AppRunner(fake, access_log=None)
    await runner.setup()
    fake_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", fake_port).start()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTP_")}
    env.update(
        OTP_DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db}",
        OTP_REDIS_URL="redis://127.0.0.1:6379/0", OTP_REDIS_KEY_PREFIX=prefix, OTP_SECRET_KEY=secrets.token_hex(32),
        OTP_EMAIL_PROVIDER="resend", OTP_RESEND_API_KEY="re_bench", OTP_RESEND_API_URL=f"http://127.0.0.1:{fake_port}",
        OTP_CHECK_DELIVERABILITY="true", OTP_DNS_NAMESERVERS=json.dumps([f"127.0.0.1:{dns_port}"]),
        OTP_TRUSTED_PROXIES='["127.0.0.1/32"]', OTP_SEND_RATE="200", OTP_LOG_LEVEL="WARNING",
        OTP_RESEND_WEBHOOK_SECRET=WEBHOOK_SECRET, OTP_ADMIN_API_KEYS=json.dumps([ADMIN["authorization"][7:]]),
        **SERVICES[name],
    )  # fmt: skip
    err = (log / f"abuse-service-{name}.err").open("w")
    proc = None
    try:
        subprocess.run(
            [sys.executable, "-m", "otp_service", "migrate"], env=env, check=True, capture_output=True
        )
        proc = subprocess.Popen([sys.executable, "-m", "otp_service", "serve", "--port", str(port)],
                                env=env, stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
        wait_ready(f"http://127.0.0.1:{port}/readyz")
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30, limits=limits) as http:
            await signed_in_before(http, provider)
            yield http, provider
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=15)
        err.close()
        await runner.cleanup()
        await drop_db(db)
        import redis

        client = redis.Redis()
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


async def watch_reputation(http: httpx.AsyncClient, stop: asyncio.Event, s: Scenario) -> None:
    """Every scenario: the admin API's reputation report, read every second."""
    while not stop.is_set():
        res = await http.get("/api/v1/admin/reputation", headers=ADMIN)
        for health in res.json():
            s.seen["rep reports"] += 1
            s.seen["rep paused"] += bool(health["paused"])
            for key in ("sent", "bounces", "complaints", "bounced_mailboxes", "complained_mailboxes",
                        "bounced_subnets", "complained_subnets"):  # fmt: skip
                s.seen[f"rep {key}"] = health[key]
        await pause(stop, 1)


async def pool_sign_ins(http: httpx.AsyncClient, provider: Provider, stop: asyncio.Event, s: Scenario,
                        members: list[tuple[str, str]]) -> None:  # fmt: skip
    """Ten of the pool's remembered users sign in, 5 s apart, from where they verified before."""
    for email, ip in members:
        if stop.is_set():
            return
        await remembered_sign_in(http, provider, s, email, ip)
        await pause(stop, 5)


async def run_scenario(http: httpx.AsyncClient, provider: Provider, scenario: Scenario, index: int,
                       args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    stop = asyncio.Event()
    legit = Legit()
    scenario.started = started = time.monotonic()
    members = [POOL[(index * 10 + j) % len(POOL)] for j in range(10)]
    tasks = [asyncio.create_task(legit_population(http, provider, stop, legit)),
             asyncio.create_task(watch_reputation(http, stop, scenario)),
             asyncio.create_task(pool_sign_ins(http, provider, stop, scenario, members))]  # fmt: skip
    if scenario.rate:
        tasks.append(asyncio.create_task(attack(http, stop, scenario.request, scenario.rate, scenario.tally)))
    if scenario.moves is not None:
        tasks.append(asyncio.create_task(scenario.moves(http, provider, stop, scenario)))
    await asyncio.sleep(max(args.minutes, scenario.min_minutes) * 60)
    stop.set()
    await asyncio.gather(*tasks)
    await asyncio.sleep(2)  # the last accepted attack sends reach the provider
    minutes = (time.monotonic() - started) / 60
    verdict, ok = scenario.judge(scenario, provider, minutes)
    share = legit.succeeded / legit.tried if legit.tried else 0.0
    seen = scenario.seen
    remembered_ok = seen["remembered tried"] > 0 and seen["remembered signed in"] == seen["remembered tried"]
    remembered_failures = {k: v for k, v in seen.items() if k.startswith("remembered ") and " from " in k}
    result = {"scenario": scenario.name, "service": scenario.service, "target": scenario.target, "attack": verdict,
              "attack_ok": ok, "attack_answers": dict(scenario.tally), "legit_users": legit.tried,
              "legit_succeeded": legit.succeeded, "legit_share": share, "legit_failures": dict(legit.failures),
              "remembered_tried": seen["remembered tried"], "remembered_signed_in": seen["remembered signed in"],
              "remembered_ok": remembered_ok, "remembered_failures": remembered_failures,
              "reputation_reports": seen["rep reports"], "paused_reports": seen["rep paused"],
              "seen": {k: v for k, v in seen.items()}}  # fmt: skip
    print(f"{scenario.name}: {verdict} [{'met' if ok else 'MISSED'}: {scenario.target}]; remembered users "
          f"{seen['remembered signed in']}/{seen['remembered tried']} {remembered_failures or ''}; paused in "
          f"{seen['rep paused']}/{seen['rep reports']} reports; legitimate users {legit.succeeded}/{legit.tried} "
          f"({share:.1%}) {dict(legit.failures) or ''}; attack answers {dict(scenario.tally)}", flush=True)  # fmt: skip
    return result


async def run(args: argparse.Namespace) -> int:
    chosen = [s for s in scenarios() if not args.only or s.name[1:].split(")")[0] in args.only.split(",")]
    dns_port = free_port()
    dns = DNSServer(
        Zone(),
        port=dns_port,
        address="127.0.0.1",
        logger=DNSLogger("-recv,-send,-request,-reply,-truncated,-error,-data"),
    )
    dns.start_thread()
    log = (HERE / "results").resolve()
    log.mkdir(exist_ok=True)
    results: list[dict[str, Any]] = []
    try:
        for name in SERVICES:
            group = [s for s in chosen if s.service == name]
            if not group:
                continue
            print(f"service {name!r}: {SERVICES[name] or 'the defaults'}", flush=True)
            async with service(name, dns_port, log) as (http, provider):
                for scenario in group:
                    results.append(await run_scenario(http, provider, scenario, len(results), args))
    finally:
        dns.stop()
    print(
        "\n| scenario | target | measured | remembered users | provider paused | legitimate users succeeding |"
    )
    print("|---|---|---|---:|---|---:|")
    for r in results:
        print(f"| {r['scenario']} | {r['target']} | {r['attack']} | {r['remembered_signed_in']}/{r['remembered_tried']} "
              f"| in {r['paused_reports']} of {r['reputation_reports']} reports | {r['legit_succeeded']}/"
              f"{r['legit_users']} ({r['legit_share']:.1%}) |")  # fmt: skip
    (log / f"abuse-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(results, indent=2))
    return 0 if all(r["attack_ok"] and r["legit_share"] >= 0.99 and r["remembered_ok"] and r["paused_reports"] == 0
                    for r in results) else 1  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=1.0, help="how long each scenario runs")
    parser.add_argument(
        "--only", default="", help="the scenarios to run, by letter: e.g. j,j',k (default: all)"
    )
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())

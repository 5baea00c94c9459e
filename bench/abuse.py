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
      admin API's reputation report, read every second), the guard blocks the attacker's subnet;
  and in every scenario at least 99% of legitimate users succeed.

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
}
VICTIM = "victim.person"  # (e) and (g): one inbox at gmail.com
HOME = "100.127.250.23"  # (g): the user's home network
CODE = re.compile(r"Your verification code is: (\d+)")
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"abuse-bench-webhook-secret-32by").decode()
ADMIN = {"authorization": "Bearer " + secrets.token_urlsafe(32)}
ATTACKER_NET = "198.22.7"  # (i): the subnet whose emails bounce and complain


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
    return f"scrapes answered {dict((k, v) for k, v in s.seen.items())}", set(s.seen) == {"scrape 401"}


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
            if await sign_in():
                s.seen["victim signed in"] += 1
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
                s.seen[f"{kind} {res.status_code}"] += 1
        # The guard's next check (every 30 s by default) blocks the subnet: its next send is refused
        # for about a day.
        while not stop.is_set():
            res = await http.post(SEND, json={"email": "atk-i-later@attacker.example"},
                                  headers={"x-forwarded-for": f"{ATTACKER_NET}.99"})  # fmt: skip
            if res.status_code == 429 and int(res.headers.get("retry-after", 0)) > 80_000:
                s.seen["attacker subnet blocked"] = 1
                break
            await asyncio.sleep(2)
        await stop.wait()
    finally:
        watching.cancel()


def reputation_judge(s: Scenario, provider: Provider, minutes: float) -> tuple[str, bool]:
    seen = s.seen
    text = (f"{seen['email.bounced 200']} bounces and {seen['email.complained 200']} complaint accepted after "
            f"{seen['volume before the attack']} emails; paused in {seen['paused reports']} of {seen['reports']} "
            f"reputation reports (last: {seen['last sent']} sent, {seen['last bounces']} bounces and "
            f"{seen['last complaints']} complaints counted); attacker subnet "
            f"{'blocked' if seen['attacker subnet blocked'] else 'NOT blocked'}")  # fmt: skip
    ok = (seen["paused reports"] == 0 and seen["reports"] > 0 and seen["attacker subnet blocked"] == 1
          and seen["email.bounced 200"] == 9 and seen["email.complained 200"] == 1)  # fmt: skip
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
    ]  # fmt: skip


def spelling(n: int) -> str:
    """(e) the n-th spelling of the victim's inbox."""
    dotted = VICTIM.replace(".", "")
    local = dotted[: 1 + n % (len(dotted) - 1)] + "." + dotted[1 + n % (len(dotted) - 1) :]
    return f"{local}+{n}@{'googlemail.com' if n % 2 else 'gmail.com'}"


async def victim_signed_in_before(http: httpx.AsyncClient, provider: Provider) -> None:
    victim = f"{VICTIM}@gmail.com"
    assert (
        await http.post(SEND, json={"email": victim}, headers={"x-forwarded-for": HOME})
    ).status_code == 202
    deadline = time.monotonic() + 15
    while not provider.emails.get(victim):
        assert time.monotonic() < deadline, "the victim's first code never arrived"
        await asyncio.sleep(0.05)
    res = await http.post(VERIFY, json={"email": victim, "code": provider.emails[victim][-1]},
                          headers={"x-forwarded-for": HOME})  # fmt: skip
    assert res.status_code == 200, res.text
    provider.emails.pop(victim)


async def run(args: argparse.Namespace) -> int:
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
    dns_port = free_port()
    dns = DNSServer(
        Zone(),
        port=dns_port,
        address="127.0.0.1",
        logger=DNSLogger("-recv,-send,-request,-reply,-truncated,-error,-data"),
    )
    dns.start_thread()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTP_")}
    env.update(
        OTP_DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db}",
        OTP_REDIS_URL="redis://127.0.0.1:6379/0", OTP_REDIS_KEY_PREFIX=prefix, OTP_SECRET_KEY=secrets.token_hex(32),
        OTP_EMAIL_PROVIDER="resend", OTP_RESEND_API_KEY="re_bench", OTP_RESEND_API_URL=f"http://127.0.0.1:{fake_port}",
        OTP_CHECK_DELIVERABILITY="true", OTP_DNS_NAMESERVERS=json.dumps([f"127.0.0.1:{dns_port}"]),
        OTP_TRUSTED_PROXIES='["127.0.0.1/32"]', OTP_SEND_RATE="200", OTP_LOG_LEVEL="WARNING",
        OTP_RESEND_WEBHOOK_SECRET=WEBHOOK_SECRET, OTP_ADMIN_API_KEYS=json.dumps([ADMIN["authorization"][7:]]),
    )  # fmt: skip
    subprocess.run([sys.executable, "-m", "otp_service", "migrate"], env=env, check=True, capture_output=True)
    log = (HERE / "results").resolve()
    log.mkdir(exist_ok=True)
    err = (log / "abuse-service.err").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "otp_service", "serve", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
    results: list[dict[str, Any]] = []
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz")
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30, limits=limits) as http:
            # (g): the victim verified from home once, before any attack.
            await victim_signed_in_before(http, provider)
            for scenario in scenarios():
                stop = asyncio.Event()
                legit, tally = Legit(), Counter[str]()
                started = time.monotonic()
                tasks = [asyncio.create_task(legit_population(http, provider, stop, legit))]
                if scenario.rate:
                    tasks.append(
                        asyncio.create_task(attack(http, stop, scenario.request, scenario.rate, tally))
                    )
                if scenario.moves is not None:
                    tasks.append(asyncio.create_task(scenario.moves(http, provider, stop, scenario)))
                await asyncio.sleep(max(args.minutes, scenario.min_minutes) * 60)
                stop.set()
                await asyncio.gather(*tasks)
                await asyncio.sleep(2)  # the last accepted attack sends reach the provider
                minutes = (time.monotonic() - started) / 60
                verdict, ok = scenario.judge(scenario, provider, minutes)
                share = legit.succeeded / legit.tried if legit.tried else 0.0
                results.append({"scenario": scenario.name, "target": scenario.target, "attack": verdict,
                                "attack_ok": ok, "attack_answers": dict(tally), "legit_users": legit.tried,
                                "legit_succeeded": legit.succeeded, "legit_share": share,
                                "legit_failures": dict(legit.failures)})  # fmt: skip
                print(f"{scenario.name}: {verdict} [{'met' if ok else 'MISSED'}: {scenario.target}]; "
                      f"legitimate users {legit.succeeded}/{legit.tried} ({share:.1%}); attack answers {dict(tally)}",
                      flush=True)  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        err.close()
        dns.stop()
        await runner.cleanup()
        await drop_db(db)
        import redis

        client = redis.Redis()
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    print("\n| scenario | target | measured | legitimate users succeeding |")
    print("|---|---|---|---:|")
    for r in results:
        print(f"| {r['scenario']} | {r['target']} | {r['attack']} | {r['legit_succeeded']}/{r['legit_users']} "
              f"({r['legit_share']:.1%}) |")  # fmt: skip
    (log / f"abuse-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(results, indent=2))
    return 0 if all(r["attack_ok"] and r["legit_share"] >= 0.99 for r in results) else 1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=1.0, help="how long each scenario runs")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())

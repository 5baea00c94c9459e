"""Soak: mixed send / verify / webhook traffic at a fixed rate through `--workers 2` on Redis and
PostgreSQL. Reports errors, RSS of the worker processes before and after, and checks that the
accounting in Redis equals what was accepted. Run by hand:

    .venv/bin/python -m bench.soak [--seconds 60] [--rate 100]
"""

import argparse
import asyncio
import base64
import json
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import redis
from svix.webhooks import Webhook

from bench.run import create_db, drop_db, free_port, wait_ready

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"soak-soak-soak-soak-soak-soak-32").decode()


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def worker_pids(parent: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


async def soak(base: str, seconds: int, rate: int) -> Counter[str]:
    results: Counter[str] = Counter()
    webhook = Webhook(WEBHOOK_SECRET)
    sent_to: list[str] = []

    async def one(http: httpx.AsyncClient, i: int) -> None:
        kind = ("send", "send", "send", "verify", "webhook")[i % 5]
        ip = f"10.{i % 250}.{(i // 250) % 250}.{secrets.randbelow(250) + 1}"
        try:
            if kind == "send":
                email = f"soak-{i}-{secrets.token_hex(3)}@example.org"
                res = await http.post(
                    base + "/api/v1/auth/otp/send", json={"email": email}, headers={"x-forwarded-for": ip}
                )
                if res.status_code == 202:
                    sent_to.append(email)
            elif kind == "verify":
                email = sent_to[-1] if sent_to else "nobody@example.org"
                res = await http.post(base + "/api/v1/auth/otp/verify", json={"email": email, "code": "000000"},
                                      headers={"x-forwarded-for": ip})  # fmt: skip
            else:
                body = json.dumps({"type": "email.delivered", "created_at": datetime.now(UTC).isoformat(),
                                   "data": {"to": [f"soak-{i}@example.org"]}})  # fmt: skip
                msg_id = f"msg_{secrets.token_hex(8)}"
                now = datetime.now(UTC)
                headers = {"svix-id": msg_id, "svix-timestamp": str(int(now.timestamp())),
                           "svix-signature": webhook.sign(msg_id, now, body), "content-type": "application/json"}  # fmt: skip
                res = await http.post(base + "/api/v1/auth/resend-events/", content=body, headers=headers)
            results[f"{kind} {res.status_code}"] += 1
        except httpx.HTTPError as exc:
            results[f"{kind} {type(exc).__name__}"] += 1

    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=64)) as http:
        tasks = []
        started = time.monotonic()
        for i in range(seconds * rate):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(http, i)))
        await asyncio.gather(*tasks)
    return results


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--rate", type=int, default=100)
    args = parser.parse_args()
    db, prefix = f"otp_soak_{secrets.token_hex(4)}", f"otpsoak{secrets.token_hex(4)}"
    asyncio.run(create_db(db))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTP_")}
    env.update(
        OTP_DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db}", OTP_REDIS_URL="redis://127.0.0.1:6379/0",
        OTP_REDIS_KEY_PREFIX=prefix, OTP_SECRET_KEY=secrets.token_urlsafe(32), OTP_TRUSTED_PROXIES='["127.0.0.1/32"]',
        OTP_RESEND_WEBHOOK_SECRET=WEBHOOK_SECRET, OTP_SEND_RATE="1000", OTP_LOG_LEVEL="WARNING",
        OTP_EMAIL_PROVIDER="console",
    )  # fmt: skip
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    r = redis.Redis()
    try:
        subprocess.run(
            [sys.executable, "-m", "otp_service", "migrate"], env=env, check=True, capture_output=True
        )
        proc = subprocess.Popen([sys.executable, "-m", "otp_service", "serve", "--port", str(port), "--workers", "2"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            wait_ready(base + "/readyz")
            time.sleep(1)
            asyncio.run(soak(base, 5, args.rate))  # warm-up, counted in the accounting below
            pids = worker_pids(proc.pid)
            rss_before = rss_kib(pids)
            started = time.monotonic()
            results = asyncio.run(soak(base, args.seconds, args.rate))
            elapsed = time.monotonic() - started
            time.sleep(2)
            rss_after = rss_kib(pids)
            global_count = r.zcard(f"{prefix}:{{{prefix}}}:global:email")
            metrics = httpx.get(base + "/metrics").text
        finally:
            proc.terminate()
            proc.wait(timeout=20)
        sends_metric = next(float(line.split()[-1]) for line in metrics.splitlines()
                            if line.startswith('otp_requests_total{app="",endpoint="send"}'))  # fmt: skip
        print(f"{args.seconds} s at {args.rate} req/s through 2 workers ({elapsed:.1f} s wall)")
        for key, n in sorted(results.items()):
            print(f"  {key}: {n}")
        print(f"  worker RSS: {rss_before / 1024:.1f} MiB before, {rss_after / 1024:.1f} MiB after")
        print(f"  accepted sends counted by /metrics (warm-up included): {sends_metric:.0f}")
        print(f"  global sorted set in Redis: {global_count}")
        errors = sum(n for k, n in results.items() if k.split()[-1][0] == "5" or not k.split()[-1].isdigit())
        ok = errors == 0 and int(sends_metric) == global_count
        print("  OK" if ok else "  MISMATCH OR ERRORS")
        return 0 if ok else 1
    finally:
        keys = list(r.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            r.delete(*keys)
        r.close()
        asyncio.run(drop_db(db))


if __name__ == "__main__":
    raise SystemExit(main())

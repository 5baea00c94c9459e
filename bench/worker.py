"""Benchmark: the delivery worker's CPU per email, in steady state. Run by hand (not a test):

    .venv/bin/python -m bench.worker [--jobs 2000] [--concurrency 8]

2,000 jobs are queued through the service's own send path (OtpService.send, one distinct
address each) with no worker running; then one `otp-service worker` process starts with
OTP_SEND_RATE raised out of the way and the Resend provider pointed at a local HTTP fake
(bench/resend_fake.py). The worker process's CPU (user + system, from /proc) is counted from the
100th delivery the fake takes to the last. Needs Redis and PostgreSQL as for the tests.
"""

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.run import HERE, bench_env, create_db, drop_db, free_port, wait_ready

WARMUP = 100


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _queue_jobs(env: dict[str, str], jobs: int) -> None:
    from otp_service.assembly import build_web, open_infrastructure
    from otp_service.net import resolve
    from otp_service.settings import Settings

    settings = Settings(
        database_url=env["OTP_DATABASE_URL"], redis_url=env["OTP_REDIS_URL"],
        redis_key_prefix=env["OTP_REDIS_KEY_PREFIX"], secret_key=env["OTP_SECRET_KEY"],
        global_daily_limits={"email": 10_000_000}, worker_enabled=False, conversion_min_sends=10_000_000,
        domain_daily_limit=10_000_000,  # every address is at example.org
    )  # fmt: skip
    async with open_infrastructure(settings) as infra:
        otp = build_web(infra).otp
        for i in range(jobs):
            # One client and one subnet per address: the rates never refuse.
            client = resolve(f"10.{i // 256 % 256}.{i % 256}.1", None, (), settings.client_prefixes())
            await otp.send(f"worker-bench-{i}@example.org", client)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    db = f"otp_bench_{secrets.token_hex(4)}"
    prefix = f"otpbench{secrets.token_hex(4)}"
    asyncio.run(create_db(db))
    fake_port = free_port()
    env = bench_env(db, prefix)
    env.update(
        OTP_EMAIL_PROVIDER="resend",
        OTP_RESEND_API_KEY="re_bench",
        OTP_RESEND_API_URL=f"http://127.0.0.1:{fake_port}",
        OTP_SEND_RATE="10000",
        OTP_LOG_LEVEL="WARNING",
    )
    fake = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.resend_fake:app", "--port", str(fake_port), "--no-access-log",
         "--log-level", "warning"], env={**env, "PYTHONPATH": str(HERE.parent)},
    )  # fmt: skip
    worker = None
    try:
        wait_ready(f"http://127.0.0.1:{fake_port}/count")
        subprocess.run(
            [sys.executable, "-m", "otp_service", "migrate"], env=env, check=True, capture_output=True
        )
        started = time.monotonic()
        asyncio.run(_queue_jobs(env, args.jobs))
        print(f"queued {args.jobs} jobs in {time.monotonic() - started:.1f} s")
        worker = subprocess.Popen(
            [sys.executable, "-m", "otp_service", "worker", "--concurrency", str(args.concurrency)], env=env
        )
        count_url = f"http://127.0.0.1:{fake_port}/count"
        mark: tuple[float, float] | None = None
        with httpx.Client() as http:
            deadline = time.monotonic() + 600
            while True:
                count = int(http.get(count_url).json()["count"])
                if mark is None and count >= WARMUP:
                    mark = (_cpu_seconds(worker.pid), time.monotonic())
                    first = count
                    if os.environ.get("BENCH_PROFILE"):  # a py-spy profile of the worker, by hand
                        subprocess.Popen(["py-spy", "record", "-o", os.environ["BENCH_PROFILE"], "-p",
                                          str(worker.pid), "-f", "raw", "-d", "4", "-r", "400"])  # fmt: skip
                if count >= args.jobs:
                    cpu, wall = _cpu_seconds(worker.pid), time.monotonic()
                    break
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise RuntimeError(f"the worker stopped at {count} deliveries")
                time.sleep(0.02)
        assert mark is not None
        emails = count - first
        print("\n| jobs | concurrency | emails counted | worker CPU ms per email | emails/s |")
        print("|---:|---:|---:|---:|---:|")
        print(f"| {args.jobs} | {args.concurrency} | {emails} | {(cpu - mark[0]) / emails * 1000:.2f} | "
              f"{emails / (wall - mark[1]):.0f} |")  # fmt: skip
    finally:
        for proc in (worker, fake):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=20)
        asyncio.run(drop_db(db))
        subprocess.run(["redis-cli", "--scan", "--pattern", f"{prefix}:*"], capture_output=True, check=False)
        keys = subprocess.run(["redis-cli", "--scan", "--pattern", f"{prefix}:*"], capture_output=True,
                              text=True, check=False).stdout.split()  # fmt: skip
        for start in range(0, len(keys), 500):
            subprocess.run(["redis-cli", "DEL", *keys[start : start + 500]], capture_output=True, check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where a request's server CPU goes: the ASGI app called in process (no uvicorn, no sockets but
Redis's), 32 concurrent callers, with one piece at a time replaced by a stand-in, in
alternating rounds within one process so the machine's drift weighs on every variant alike.
Run by hand (not a test), Redis and PostgreSQL as for the tests:

    .venv/bin/python -m bench.ablate cooldown --rounds 5

Variants (several joined with '+'):
- base: the service as it is;
- no-redis: the send decision (send paths only: a cooldown refusal) answered without Redis (the request never waits);
- yield: that answer after one `await asyncio.sleep(0)` (the task suspended and resumed once);
- ping: that answer after a PING on the service's Redis connection (one real round trip);
- no-problem: the refusal's problem+json body and its Response replaced by a prebuilt one;
- no-seal: the job's sealing replaced by a constant;
- no-hmac: the address id and code hash replaced by constants.

The stand-ins are patched in here, for measurement only: the service never runs them.
"""

import argparse
import asyncio
import itertools
import os
import secrets
import statistics
import time
from collections.abc import Callable
from typing import Any

from starlette.types import Message, Scope

PATHS = {
    "accepted": ("/api/v1/auth/otp/send", '{{"email":"ablate-{i}@example.org"}}'),
    "cooldown": ("/api/v1/auth/otp/send", '{{"email":"ablate-cooldown@example.org"}}'),
    "verify": ("/api/v1/auth/otp/verify", '{{"email":"ablate-{i}@example.org","code":"123456"}}'),
}


def _patch(obj: Any, name: str, value: Any) -> Callable[[], None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    return lambda: setattr(obj, name, old)


def apply(variant: str) -> Callable[[], None]:
    """Install a variant's stand-ins; returns what takes them out again."""
    from starlette.responses import Response

    from otp_service.api import problems
    from otp_service.delivery.jobs import JobSealer
    from otp_service.otp.codes import CodeCrypto
    from otp_service.otp.store import RedisCodeStore, SendDecision, SendStatus

    cooldown = SendDecision(SendStatus.COOLDOWN, retry_after_ms=50_000)
    undo: list[Callable[[], None]] = []
    for part in variant.split("+"):
        if part == "base":
            continue
        if part == "no-redis":

            async def answered(self: RedisCodeStore, req: Any) -> SendDecision:
                return cooldown

            undo.append(_patch(RedisCodeStore, "decide_send", answered))
        elif part == "yield":

            async def after_yield(self: RedisCodeStore, req: Any) -> SendDecision:
                await asyncio.sleep(0)
                return cooldown

            undo.append(_patch(RedisCodeStore, "decide_send", after_yield))
        elif part == "ping":

            async def after_ping(self: RedisCodeStore, req: Any) -> SendDecision:
                await self._redis.execute("PING")
                return cooldown

            undo.append(_patch(RedisCodeStore, "decide_send", after_ping))
        elif part == "no-problem":
            prebuilt = Response(b'{"code":"cooldown"}', 429, media_type="application/problem+json")

            def rendered(exc: Any, request: Any, prebuilt: Response = prebuilt) -> Response:
                return prebuilt

            undo.append(_patch(problems, "problem_response", rendered))
        elif part == "no-seal":
            undo.append(_patch(JobSealer, "seal", lambda self, job: b"x" * 200))
        elif part == "no-hmac":
            undo.append(_patch(CodeCrypto, "code_hash", lambda self, email, code: "a" * 64))
            undo.append(_patch(CodeCrypto, "address_id", lambda self, email: "a" * 32))
        else:
            raise SystemExit(f"unknown variant {part!r}")

    def remove() -> None:
        for step in reversed(undo):
            step()

    return remove


async def run(path: str, variants: list[str], rounds: int, requests: int) -> None:
    from otp_service.app import create_app
    from otp_service.settings import load_settings

    app = create_app(load_settings())
    state: dict[str, Any] = {}
    started: asyncio.Queue[Message] = asyncio.Queue()
    sent_startup = False

    async def lifespan_receive() -> Message:
        nonlocal sent_startup
        if not sent_startup:
            sent_startup = True
            return {"type": "lifespan.startup"}
        await asyncio.Event().wait()
        raise AssertionError

    async def lifespan_send(message: Message) -> None:
        started.put_nowait(message)

    lifespan = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}, lifespan_receive, lifespan_send))  # fmt: skip
    assert (await started.get())["type"] == "lifespan.startup.complete"
    route, template = PATHS[path]
    counter = itertools.count()
    statuses: dict[int, int] = {}

    async def one() -> None:
        i = next(counter)
        body = template.format(i=i).encode()
        forwarded = f"{11 + ((i >> 16) & 63)}.{(i >> 8) & 255}.{i & 255}.7".encode()  # its own /24
        scope: Scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": route, "raw_path": route.encode(), "query_string": b"",
            "root_path": "", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
            "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()), (b"x-forwarded-for", forwarded)],
            "state": dict(state),
        }  # fmt: skip
        delivered = False

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()
            raise AssertionError

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1

        await app(scope, receive, send)

    async def callers(total: int) -> None:
        async def caller(n: int) -> None:
            for _ in range(n):
                await one()

        await asyncio.gather(*(caller(total // 32) for _ in range(32)))

    await callers(3200)  # warm-up (and the cooldown's first, accepted, send)
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for variant in variants:
            undo = apply(variant)
            statuses.clear()
            before = time.process_time()
            await callers(requests)
            cpu[variant].append((time.process_time() - before) / requests * 1e6)
            undo()
    lifespan.cancel()
    print(f"\n{path}: process CPU µs per request, {rounds} alternating rounds of {requests} requests\n")
    print("| variant | median | rounds | ÷ base |")
    print("|---|---:|---|---:|")
    base = statistics.median(cpu[variants[0]])
    for variant, values in cpu.items():
        mid = statistics.median(values)
        print(f"| {variant} | {mid:.0f} | {' / '.join(f'{v:.0f}' for v in values)} | {mid / base:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path", choices=sorted(PATHS))
    parser.add_argument("--variants", default="base,no-redis,yield,ping,no-problem,no-seal,no-hmac")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=3200)
    args = parser.parse_args()
    prefix = "ablate" + secrets.token_hex(4)
    os.environ.update(
        OTP_REDIS_URL=os.environ.get("OTP_REDIS_URL", "redis://127.0.0.1:6379/0"),
        OTP_REDIS_KEY_PREFIX=prefix,
        OTP_SECRET_KEY=secrets.token_urlsafe(32),
        OTP_TRUSTED_PROXIES='["127.0.0.1/32"]',
        OTP_GLOBAL_DAILY_LIMITS='{"email": 100000000}',
        OTP_DOMAIN_DAILY_LIMIT="100000000",
        OTP_LOG_LEVEL="WARNING",
        OTP_WORKER_ENABLED="false",
        OTP_DATABASE_URL=os.environ.get(
            "OTP_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    import uvloop

    from bench.run import drop_keys

    try:
        uvloop.run(run(args.path, args.variants.split(","), args.rounds, args.requests))
    finally:
        drop_keys(f"*{prefix}*")


if __name__ == "__main__":
    main()

"""Benchmark: process CPU per EVALSHA with 32 concurrent callers, for each Redis client the
service could run its scripts on. Run by hand (not a test), Redis on 127.0.0.1:6379:

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -e '.[bench]' uvloop
    .venv-bench/bin/python -m bench.redis_clients [--calls 20000] [--concurrency 32] [--rounds 3]

(a venv of its own: the test extra's slowapi/limits peer needs coredis < 6).

Each client runs in a fresh process of its own on uvloop (as the service runs), so the CPU
counted (user + system, all threads: valkey-glide's Rust core runs in threads of its own) is
that client's alone. The script is the service's real verify script on keys of a throwaway
prefix, so Redis's share per call is the same for every client and is not counted here.

- pipelined: the service's own connection (otp_service.redisio.PipelinedRedis).
- redis-py: redis.asyncio with hiredis, one blocking pool of 32 connections, no socket
  timeouts (no per-call timers), Script objects (EVALSHA).
- coredis: one client, its default (blocking) pool, `evalsha`.
- valkey-glide: one GlideClient (one multiplexed connection), `invoke_script`.
"""

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

HOST, PORT = "127.0.0.1", 6379
CLIENTS = ("pipelined", "redis-py", "coredis", "valkey-glide")


def _source() -> str:
    from otp_service.otp.store import RedisCodeStore

    return RedisCodeStore._VERIFY.source


async def _caller(name: str, source: str) -> tuple[Callable[[list[str], list[str]], Awaitable[Any]], Any]:
    """(call(keys, args), closer) for one client."""
    sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1
    if name == "pipelined":
        from otp_service.redisio import PipelinedRedis, evalsha

        pipelined = PipelinedRedis(HOST, PORT, timeout=5)

        async def call_pipelined(keys: list[str], args: list[str]) -> Any:
            return await evalsha(pipelined, sha, source, keys, args)

        return call_pipelined, pipelined.aclose
    if name == "redis-py":
        from redis.asyncio import BlockingConnectionPool, Redis

        client = Redis.from_pool(BlockingConnectionPool(host=HOST, port=PORT, max_connections=32))
        script = client.register_script(source)

        async def call_redis_py(keys: list[str], args: list[str]) -> Any:
            return await script(keys=keys, args=args)

        return call_redis_py, client.aclose
    if name == "coredis":
        import coredis

        core: Any = coredis.Redis(host=HOST, port=PORT)
        entered = await core.__aenter__()
        await entered.script_load(source)

        async def call_coredis(keys: list[str], args: list[str]) -> Any:
            return await entered.evalsha(sha, keys=keys, args=args)

        async def close_coredis() -> None:
            await core.__aexit__(None, None, None)

        return call_coredis, close_coredis
    if name == "valkey-glide":
        import glide as glide_module

        api: Any = glide_module  # typed where installed, absent (ignored) in the test extra
        glide = await api.GlideClient.create(api.GlideClientConfiguration([api.NodeAddress(HOST, PORT)]))
        glide_script = api.Script(source)

        async def call_glide(keys: list[str], args: list[str]) -> Any:
            return await glide.invoke_script(glide_script, keys=keys, args=args)

        return call_glide, glide.close
    raise ValueError(name)


async def _measure(name: str, calls: int, concurrency: int) -> dict[str, Any]:
    prefix = f"otpbench{secrets.token_hex(4)}"
    call, close = await _caller(name, _source())
    tag = f"{prefix}:{{{prefix}}}"

    async def one(i: int) -> None:
        # A verify for an address with no code: the throttle records a hit, the answer is
        # `expired`. Distinct clients, so the throttle never refuses.
        keys = [f"{tag}:ip:{i % 4096}", f"{tag}:code:{i}"]
        args = [str(int(time.time() * 1000)), "1000000", "60000", f"m{i}", "h", "5"]
        await call(keys, args)

    for i in range(200):  # warm up: connections, script cache
        await one(i)
    queue = iter(range(calls))

    async def worker() -> None:
        for i in queue:
            await one(i)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await close()
    return {"cpu_us_per_call": cpu / calls * 1e6, "calls_per_s": calls / wall, "prefix": prefix}


def _cleanup(prefix: str) -> None:
    found = subprocess.run(
        ["redis-cli", "-h", HOST, "-p", str(PORT), "--scan", "--pattern", f"{prefix}:*"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    keys = found.stdout.split()
    for start in range(0, len(keys), 500):
        subprocess.run(["redis-cli", "-h", HOST, "-p", str(PORT), "DEL", *keys[start : start + 500]],
                       capture_output=True, check=False)  # fmt: skip


def _child(name: str, calls: int, concurrency: int) -> None:
    import uvloop

    result = uvloop.run(_measure(name, calls, concurrency))
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", nargs="*", default=list(CLIENTS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.calls, args.concurrency)
        return
    results: dict[str, list[dict[str, float]]] = {c: [] for c in args.clients}
    for _ in range(args.rounds):  # interleaved, so a slow minute of the machine hits every client
        for name in args.clients:
            out = subprocess.run(
                [sys.executable, "-m", "bench.redis_clients", "--child", name, "--calls", str(args.calls),
                 "--concurrency", str(args.concurrency)],
                capture_output=True, text=True, check=False, env=os.environ,
            )  # fmt: skip
            if out.returncode != 0:
                print(f"{name}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            result = json.loads(out.stdout.strip().splitlines()[-1])
            _cleanup(result.pop("prefix"))
            results[name].append(result)
    base = min((r["cpu_us_per_call"] for r in results.get("pipelined", [])), default=None)
    print(f"{args.calls} EVALSHA (verify.lua) per round, {args.concurrency} concurrent callers, "
          f"{args.rounds} rounds; best round per client\n")  # fmt: skip
    print("| client | CPU µs per call (best) | all rounds | calls/s (best) | ÷ pipelined |")
    print("|---|---:|---|---:|---:|")
    for name, runs in results.items():
        if not runs:
            print(f"| {name} | failed | | | |")
            continue
        best = min(r["cpu_us_per_call"] for r in runs)
        every = " / ".join(f"{r['cpu_us_per_call']:.1f}" for r in runs)
        rate = max(r["calls_per_s"] for r in runs)
        ratio = f"{best / base:.2f}" if base else "-"
        print(f"| {name} | {best:.1f} | {every} | {rate:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()

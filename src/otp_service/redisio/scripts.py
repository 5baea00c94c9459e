"""Lua scripts kept as .lua files inside the package (a shared prelude first), called by SHA."""

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import fields
from functools import cache
from importlib import resources
from operator import attrgetter
from typing import Any

from otp_service.redisio.client import Arg, RedisClient, ReplyError


async def evalsha(
    client: RedisClient, sha: str, source: str, keys: Sequence[Arg], args: Sequence[Arg]
) -> Any:
    """EVALSHA; on NOSCRIPT (Redis restarted or flushed its scripts), EVAL, which loads it."""
    try:
        return await client.execute("EVALSHA", sha, len(keys), *keys, *args)
    except ReplyError as exc:
        if not str(exc).startswith("NOSCRIPT"):
            raise
    return await client.execute("EVAL", source, len(keys), *keys, *args)


class Script:
    """One script: the named .lua files of their packages' `lua/` folders, joined in order,
    under a `#!lua` line (Redis 7 script flags). A script without flags may write, so Redis
    refuses it whole, before it runs, on a full Redis (OOM) or a replica (READONLY): without the
    line a script whose first write only deletes would be let on past OOM and accept a send
    (allow_oom for the scripts that only free memory; reads_only for those that never write).

    `durable`: the service answers for what this script decides (a send, a verify, an
    Idempotency-Key's answer), so with OTP_REDIS_MIN_REPLICAS the call returns only once the
    replicas hold it (replication.py), else raises NotReplicated, which `redis_guard` answers
    with 503. `durable_unless`: the replies, by their first field, that nobody is answered with
    (an Idempotency-Key claimed, or still pending): they wait for nothing. A read-only script may
    be durable too: the answer it reads (a kept decision) is then on the replicas before it is
    repeated. Without the setting a durable script costs one attribute read."""

    def __init__(
        self, *parts: tuple[str, str], allow_oom: bool = False, reads_only: bool = False,
        durable: bool = False, durable_unless: tuple[bytes, ...] = (),
    ) -> None:  # fmt: skip
        flags = ",".join(name for name, on in (("allow-oom", allow_oom), ("no-writes", reads_only)) if on)
        shebang = f"#!lua flags={flags}" if flags else "#!lua"
        self.source = "\n".join([shebang, *(_lua(package, name) for package, name in parts)])
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1
        self.durable = durable
        self._unless = durable_unless

    async def __call__(self, client: RedisClient, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        reply = await evalsha(client, self.sha, self.source, keys, args)
        if self.durable:
            replicas = client.replicas
            if replicas is not None and not (self._unless and reply[0] in self._unless):
                await replicas.wait()
        return reply


@cache
def _lua(package: str, name: str) -> str:
    return (resources.files(package) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


_ORDER: dict[type, Callable[[Any], Any]] = {}


def positional(named: Any) -> tuple[Arg, ...]:
    """A script's named keys or arguments (a dataclass whose fields follow the script's header,
    at least two of them) in the order the script reads them."""
    getter = _ORDER.get(type(named))
    if getter is None:
        getter = _ORDER[type(named)] = attrgetter(*(field.name for field in fields(named)))
    values: tuple[Arg, ...] = getter(named)
    return values

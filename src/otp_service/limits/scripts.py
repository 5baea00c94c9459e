"""Lua scripts kept as .lua files, loaded with importlib.resources, registered once per client.

Both clients call EVALSHA and fall back to EVAL on NOSCRIPT, so a restarted Redis costs one
extra round trip once, never an error.
"""

import hashlib
from collections.abc import Awaitable, Sequence
from functools import cache
from importlib import resources
from typing import Any, Protocol

from otp_service.limits.keys import RedisClient
from otp_service.limits.pipelined import Arg, PipelinedRedis

ScriptClient = RedisClient | PipelinedRedis
"""Who runs the scripts: redis-py (cluster, TLS, unix sockets) or the pipelined connection."""


@cache
def script_source(name: str) -> str:
    lua = resources.files("otp_service.limits") / "lua"
    prelude = (lua / "_prelude.lua").read_text(encoding="utf-8")
    return prelude + "\n" + (lua / f"{name}.lua").read_text(encoding="utf-8")


class Script(Protocol):
    def __call__(self, *, keys: Sequence[str], args: Sequence[Arg]) -> Awaitable[Any]: ...


class _PipelinedScript:
    def __init__(self, client: PipelinedRedis, source: str) -> None:
        self._client = client
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1

    def __call__(self, *, keys: Sequence[str], args: Sequence[Arg]) -> Awaitable[Any]:
        return self._client.evalsha(self._sha, self._source, keys, args)


def _script(client: ScriptClient, name: str) -> Script:
    source = script_source(name)
    if isinstance(client, PipelinedRedis):
        return _PipelinedScript(client, source)
    registered: Script = client.register_script(source)
    return registered


class Scripts:
    def __init__(self, client: ScriptClient) -> None:
        self.send = _script(client, "send")
        self.verify = _script(client, "verify")
        self.throttle = _script(client, "throttle")
        self.take_token = _script(client, "take_token")

"""Lua scripts kept as .lua files, loaded with importlib.resources, registered once per client.

redis-py's registered scripts call EVALSHA and reload on NOSCRIPT, so a restarted Redis costs
one extra round trip once, never an error.
"""

from functools import cache
from importlib import resources

from redis.commands.core import AsyncScript

from otp_service.limits.keys import RedisClient


@cache
def script_source(name: str) -> str:
    lua = resources.files("otp_service.limits") / "lua"
    prelude = (lua / "_prelude.lua").read_text(encoding="utf-8")
    return prelude + "\n" + (lua / f"{name}.lua").read_text(encoding="utf-8")


class Scripts:
    def __init__(self, redis: RedisClient) -> None:
        self.send: AsyncScript = redis.register_script(script_source("send"))
        self.verify: AsyncScript = redis.register_script(script_source("verify"))
        self.throttle: AsyncScript = redis.register_script(script_source("throttle"))
        self.take_token: AsyncScript = redis.register_script(script_source("take_token"))

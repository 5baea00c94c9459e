"""The request path's floor (issue 23): the bare endpoint (bench/bare_app.py) plus one awaited Lua
call through the service's own Redis client, one key written. Every decision the service makes
costs at least this; the service's own work is what it costs beyond.

    OTP_REDIS_URL=redis://127.0.0.1:6379/0 OTP_REDIS_KEY_PREFIX=… uvicorn bench.floor_app:app
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import BaseModel, Field

from otp_service.redisio import RedisKeys, Script, open_redis

KEYS = RedisKeys(os.environ.get("OTP_REDIS_KEY_PREFIX", "otpfloor"))
# One key written, with a TTL, as the cooldown is: the least a decision can store.
WRITE = Script(("bench", "floor"))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.redis = open_redis(os.environ.get("OTP_REDIS_URL", "redis://127.0.0.1:6379/0"), KEYS,
                                 timeout=1.5, cluster=False)  # fmt: skip
    yield
    await app.state.redis.aclose()


app = FastAPI(lifespan=lifespan)


class SendIn(BaseModel):
    email: str = Field(max_length=320)


@app.post("/api/v1/auth/otp/send", status_code=202)
async def send(body: SendIn) -> dict[str, object]:
    await WRITE(app.state.redis, [KEYS.cooldown(body.email)], [60_000])
    return {"status": "pending", "expires_in": 300, "resend_after": 60}

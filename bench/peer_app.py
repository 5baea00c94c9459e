"""The peer: what a team would build without otp-service. FastAPI + slowapi (the limits library,
Redis storage) for the per-IP rate, limits' async moving windows for the per-address cooldown,
daily cap and global cap, the code hash in Redis and a Redis list as the delivery queue.
Same body, same limits, same answers' status codes; several round trips per request."""

import hashlib
import hmac
import json
import os
import secrets

import redis.asyncio as aioredis
from email_validator import EmailNotValidError, validate_email
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from limits import parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from pydantic import BaseModel, Field
from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded

REDIS = os.environ.get("PEER_REDIS", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("PEER_PREFIX", "peer")
SECRET = os.environ.get("PEER_SECRET", "peer-secret-0123456789").encode()


def client_ip(request: Request) -> str:
    # Behind the benchmark's trusted proxy, like the service: the forwarded address.
    forwarded = request.headers.get("x-forwarded-for")
    return forwarded.split(",")[-1].strip() if forwarded else (request.client.host if request.client else "-")


limiter = Limiter(key_func=client_ip, storage_uri=REDIS, strategy="moving-window", key_prefix=PREFIX)
windows = MovingWindowRateLimiter(storage_from_string(f"async+{REDIS}", key_prefix=PREFIX))
COOLDOWN, DAILY, GLOBAL = parse("1/minute"), parse("10/day"), parse("100000000/day")
redis = aioredis.from_url(REDIS)

app = FastAPI()
app.state.limiter = limiter
app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]


class SendIn(BaseModel):
    email: str = Field(max_length=320)


class VerifyIn(BaseModel):
    email: str = Field(max_length=320)
    code: str = Field(pattern=r"^[0-9]{6}$")


def _problem(status: int, code: str) -> JSONResponse:
    return JSONResponse({"code": code}, status_code=status)


def _normalise(raw: str) -> str | None:
    try:
        return validate_email(raw, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


@app.post("/api/v1/auth/otp/send", status_code=202)
@limiter.limit("1000000/minute")
async def send(request: Request, body: SendIn) -> object:
    email = _normalise(body.email)
    if email is None:
        return _problem(422, "invalid_email")
    if not await windows.hit(COOLDOWN, "cooldown", email):
        return _problem(429, "cooldown")
    if not await windows.hit(DAILY, "daily", email):
        return _problem(429, "daily_limit")
    if not await windows.hit(GLOBAL, "global"):
        return _problem(503, "global_limit")
    code = f"{secrets.randbelow(10**6):06d}"
    digest = hmac.new(SECRET, f"{email}\0{code}".encode(), hashlib.sha256).hexdigest()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(f"{PREFIX}:code:{email}", digest, ex=300)
        pipe.rpush(f"{PREFIX}:jobs", json.dumps({"email": email, "code": code}))
        await pipe.execute()
    return {"status": "pending", "expires_in": 300, "resend_after": 60}


@app.post("/api/v1/auth/otp/verify")
@limiter.limit("1000000/minute")
async def verify(request: Request, body: VerifyIn) -> object:
    email = _normalise(body.email)
    if email is None:
        return _problem(422, "invalid_request")
    stored = await redis.get(f"{PREFIX}:code:{email}")
    if stored is None:
        return _problem(400, "code_expired")
    digest = hmac.new(SECRET, f"{email}\0{body.code}".encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(stored.decode() if isinstance(stored, bytes) else str(stored), digest):
        attempts = await redis.incr(f"{PREFIX}:attempts:{email}")
        if attempts >= 5:
            await redis.delete(f"{PREFIX}:code:{email}", f"{PREFIX}:attempts:{email}")
            return _problem(400, "max_attempts_reached")
        return _problem(400, "invalid_code")
    await redis.delete(f"{PREFIX}:code:{email}", f"{PREFIX}:attempts:{email}")
    return {"status": "approved", "email": email}

from fastapi import APIRouter

from otp_service.api.deps import ReadinessDep, TokensDep
from otp_service.api.schemas import HealthOut, ReadyOut
from otp_service.errors import Unavailable

router = APIRouter(tags=["operations"])


@router.get(
    "/.well-known/jwks.json",
    summary="Public keys of the verification tokens (empty when tokens are not configured)",
    tags=["tokens"],
)
async def jwks(tokens: TokensDep) -> dict[str, list[dict[str, str]]]:
    return tokens.jwks() if tokens is not None else {"keys": []}


@router.get("/healthz", summary="Liveness: 200 while the process runs")
async def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get(
    "/readyz",
    summary="Readiness: 200 when Redis and the database answer, else 503",
    responses={503: {"description": "A dependency is down (problem+json, `checks` says which)"}},
)
async def readyz(readiness: ReadinessDep) -> ReadyOut:
    checks = await readiness.checks()
    down = [name for name, state in checks.items() if state == "down"]
    if down:
        err = Unavailable(f"not answering: {', '.join(down)}", retry_after=5)
        err.extra["checks"] = checks
        raise err
    return ReadyOut(status="ready", checks=checks)

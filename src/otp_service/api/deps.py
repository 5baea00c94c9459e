"""Annotated dependency aliases; the only way routers reach the runtime.

All are `async def`: FastAPI runs a plain `def` dependency in the threadpool, which on the hot
path cost more than the Redis round trip (py-spy, see the README's benchmark). The OTP routes
take one dependency, not three: each one is a resolution step on every request.
"""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from otp_service.net import client_ip
from otp_service.otp.service import OtpService
from otp_service.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


@dataclass(frozen=True, slots=True)
class OtpCall:
    """What an OTP route needs: the service and the client's IP."""

    otp: OtpService
    client_ip: str


async def get_otp_call(request: Request) -> OtpCall:
    runtime: Runtime = request.app.state.runtime
    peer = request.client.host if request.client else None
    ip = client_ip(peer, request.headers.get("x-forwarded-for"), runtime.trusted_networks)
    return OtpCall(runtime.otp, ip)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
OtpCallDep = Annotated[OtpCall, Depends(get_otp_call)]

"""Annotated dependency aliases; the only way routers reach the runtime."""

from typing import Annotated

from fastapi import Depends, Request

from otp_service.net import client_ip
from otp_service.otp.service import OtpService
from otp_service.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_otp_service(request: Request) -> OtpService:
    service: OtpService = request.app.state.runtime.otp
    return service


def get_client_ip(request: Request) -> str:
    runtime: Runtime = request.app.state.runtime
    peer = request.client.host if request.client else None
    return client_ip(peer, request.headers.get("x-forwarded-for"), runtime.trusted_networks)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
OtpServiceDep = Annotated[OtpService, Depends(get_otp_service)]
ClientIpDep = Annotated[str, Depends(get_client_ip)]

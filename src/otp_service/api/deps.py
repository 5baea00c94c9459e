"""Annotated dependency aliases; the only way routers reach the runtime."""

from typing import Annotated

from fastapi import Depends, Request

from otp_service.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

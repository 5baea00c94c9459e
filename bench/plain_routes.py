"""The service with its send and verify routes as plain APIRoutes instead of FastRoutes: the
reference FastRoute is measured against (bench.run --also plain-routes) and compared with byte
for byte (tests/test_fast_route.py).

    uvicorn --factory bench.plain_routes:create
"""

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from otp_service.api import otp
from otp_service.api.routing import FastRoute, LimitedRoute
from otp_service.app import create_app
from otp_service.logs import configure_logging
from otp_service.settings import load_settings


def plain_routes(app: FastAPI) -> None:
    """Replace the OTP router by one of plain APIRoutes with the same declarations and the same
    refusal policy."""
    app.router.routes[:] = [
        r for r in app.router.routes if getattr(r, "original_router", None) is not otp.router
    ]
    reference = APIRouter(route_class=APIRoute)
    for route in otp.router.routes:
        assert isinstance(route, LimitedRoute)  # FastRoutes, and the body-less status look-up
        reference.add_api_route(
            route.path, route.endpoint, methods=list(route.methods or ()), status_code=route.status_code,
            response_model=route.response_model, responses=route.responses,
            response_model_exclude_none=route.response_model_exclude_none,
            route_class_override=APIRoute if isinstance(route, FastRoute) else type(route),
        )  # fmt: skip
        reference.routes[-1].refusal = route.refusal  # type: ignore[attr-defined]
    app.include_router(reference)


def create() -> FastAPI:
    settings = load_settings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    plain_routes(app)
    return app

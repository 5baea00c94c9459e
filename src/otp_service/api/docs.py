"""The OpenAPI document (every error documented as problem+json) and `/docs`, Swagger UI served
from the package: it works with no internet access."""

from importlib import resources
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from otp_service.api.problems import PROBLEM_MEDIA_TYPE
from otp_service.api.schemas import Problem

ASSETS = "/docs/assets"


def install_docs(app: FastAPI) -> None:
    static = resources.files("otp_service.api") / "static" / "swagger-ui"
    app.mount(ASSETS, StaticFiles(directory=str(static)), name="docs-assets")
    router = APIRouter(include_in_schema=False)

    @router.get("/docs")
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="otp-service API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )

    app.include_router(router)


def install_openapi(app: FastAPI) -> None:
    """Document every error response as application/problem+json with the Problem schema
    (FastAPI documents its own 422 as application/json)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        problem_ref = {"$ref": "#/components/schemas/Problem"}
        for operation in (op for path in schema.get("paths", {}).values() for op in path.values()):
            for status, response in operation.get("responses", {}).items():
                if not status.isdigit() or int(status) < 400:
                    continue
                content = response.setdefault("content", {})
                problem = content.pop("application/json", None) or {}
                entry = content.setdefault(PROBLEM_MEDIA_TYPE, {})
                entry["schema"] = problem_ref
                if "examples" not in entry and "example" in problem:
                    entry["example"] = problem["example"]
            if "422" not in operation.get("responses", {}) and operation.get("requestBody"):
                operation["responses"]["422"] = {
                    "description": "`invalid_request`",
                    "content": {PROBLEM_MEDIA_TYPE: {"schema": problem_ref}},
                }
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if "Problem" not in components:
            components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

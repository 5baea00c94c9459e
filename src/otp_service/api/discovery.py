"""GET /.well-known/otp-configuration (CONTRACT §3): what a client needs to build its screens
without hard-coding "6 digits" and "60 s", from the effective settings. The document is the same
for the whole life of the process, so it is rendered once, when the app is created."""

from typing import Annotated, Literal, get_args

from fastapi import APIRouter, FastAPI, Path
from fastapi.responses import Response
from pydantic import BaseModel, Field

from otp_service.errors import NotFound
from otp_service.locales import Locale
from otp_service.otp.service import IDEMPOTENCY_KEEP_MS
from otp_service.settings import Settings

PATH = "/.well-known/otp-configuration"
CACHE_CONTROL = "public, max-age=300"
"""Clients and CDNs may keep it five minutes: settings change with a restart, not per request."""


class CaptchaOut(BaseModel):
    provider: str
    site_key: str | None = Field(description="The public site key for the widget (OTP_CAPTCHA_SITE_KEY)")
    mode: Literal["always", "adaptive"] = Field(
        description="`always`: every send carries `captcha_token`; "
        "`adaptive`: only after a 400 `captcha_required`"
    )


class VerificationTokenOut(BaseModel):
    issuer: str
    audience: str
    jwks_uri: str = Field(description="The public keys, as a path on this service")


class OtpConfigurationOut(BaseModel):
    code_length: int = Field(description="Digits in a code (OTP_CODE_LENGTH)")
    code_alphabet: Literal["digits"] = "digits"
    code_ttl: int = Field(description="Seconds a code lives")
    resend_after: int = Field(description="Seconds between sends to one address (the cooldown)")
    max_attempts: int = Field(description="Wrong codes that invalidate a code")
    locales: list[str] = Field(description="Values the send's `locale` accepts")
    default_locale: str
    resend_strategy: Literal["rotate", "reuse"] = Field(
        description="`rotate`: a new send replaces the live code; `reuse`: it emails the live code again"
    )
    idempotency_window: int = Field(description="Seconds an Idempotency-Key's answer is repeated")
    captcha: CaptchaOut | None
    verification_token: VerificationTokenOut | None = Field(
        description="When verify returns a signed token: how to check it"
    )
    verify_link: bool = Field(description="The email carries a link whose fragment holds the email and code")


def configuration(settings: Settings, root_path: str = "") -> OtpConfigurationOut:
    s = settings
    captcha = None
    if s.captcha_provider is not None:
        captcha = CaptchaOut(provider=s.captcha_provider, site_key=s.captcha_site_key, mode=s.captcha_mode)
    token = None
    if s.jwt_private_key is not None:
        token = VerificationTokenOut(
            issuer=s.jwt_issuer, audience=s.jwt_audience, jwks_uri=f"{root_path}/.well-known/jwks.json"
        )
    return OtpConfigurationOut(
        code_length=s.code_length, code_ttl=s.code_ttl, resend_after=s.rate_limit_ttl,
        max_attempts=s.max_attempts, locales=list(get_args(Locale)), default_locale=s.default_locale,
        resend_strategy=s.resend_strategy, idempotency_window=IDEMPOTENCY_KEEP_MS // 1000, captcha=captcha,
        verification_token=token, verify_link=s.verify_link_template is not None,
    )  # fmt: skip


def install_discovery(app: FastAPI, settings: Settings) -> None:
    body = configuration(settings).model_dump_json().encode()
    router = APIRouter(tags=["operations"])

    @router.get(
        PATH,
        response_model=OtpConfigurationOut,
        summary="Discovery: code length, lifetime, cooldown, locales, captcha and token settings",
        description="Public and cacheable. Build the sign-in screens from it rather than hard-coding values "
        "an operator can change.",
        responses={
            200: {"headers": {"Cache-Control": {"schema": {"type": "string"}, "description": CACHE_CONTROL}}}
        },
    )
    async def otp_configuration() -> Response:
        return Response(body, media_type="application/json", headers={"Cache-Control": CACHE_CONTROL})

    # Each application's own document (CONTRACT §8), rendered once like the service's.
    bodies = {
        app: configuration(view).model_dump_json().encode()
        for app, view in settings.app_views().items()
        if app
    }
    if bodies:

        @router.get(
            f"/api/v1/apps/{{app}}{PATH}",
            response_model=OtpConfigurationOut,
            tags=["applications"],
            summary="Discovery, for one application: its code length, lifetime, cooldown, captcha and token",
            description="As the service's discovery document, with the application's own settings.",
            responses={404: {"description": "No such application (`not_found`)"}},
        )
        async def app_configuration(
            app: Annotated[str, Path(description="The application's id (OTP_APPS)")],
        ) -> Response:
            found = bodies.get(app)
            if found is None:
                raise NotFound("No such application")
            return Response(found, media_type="application/json", headers={"Cache-Control": CACHE_CONTROL})

    app.include_router(router)

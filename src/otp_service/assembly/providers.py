"""The email providers, each with the client it talks through."""

import contextlib

import httpx
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from httpx_aiohttp import AiohttpTransport

from otp_service.assembly.infrastructure import create_http_client
from otp_service.delivery.providers.base import EmailProvider
from otp_service.delivery.providers.console import ConsoleProvider
from otp_service.delivery.providers.resend import ResendProvider
from otp_service.delivery.providers.ses import SesProvider
from otp_service.delivery.providers.smtp import SmtpProvider
from otp_service.settings import Settings


def create_provider_http_client(settings: Settings) -> httpx.AsyncClient:
    """The email provider's client: httpx over aiohttp's connection pool and C HTTP parser
    (httpx-aiohttp), which costs the worker a fraction of httpcore's CPU per email (measured in
    the README's "Performance" section). Certificates are verified as httpx does (SSL_CERT_FILE)."""
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    return create_http_client(settings, AiohttpTransport(limits=limits, trust_env=True))


async def build_provider(name: str, settings: Settings, stack: contextlib.AsyncExitStack) -> EmailProvider:
    if name == "console":
        return ConsoleProvider()
    if name == "resend":
        assert settings.resend_api_key is not None  # enforced by Settings
        return ResendProvider(
            await stack.enter_async_context(create_provider_http_client(settings)),
            api_url=settings.resend_api_url,
            api_key=settings.resend_api_key.get_secret_value(),
            timeout=settings.provider_timeout,
        )
    if name == "ses":
        # Our own loop retries and fails over; botocore's retries would hide throttling.
        config = AioConfig(
            connect_timeout=min(5.0, settings.provider_timeout),
            read_timeout=settings.provider_timeout,
            retries={"max_attempts": 1, "mode": "standard"},
        )
        client = await stack.enter_async_context(
            get_session().create_client(
                "sesv2",
                region_name=settings.ses_region,
                endpoint_url=settings.ses_endpoint_url,
                config=config,
            )
        )
        return SesProvider(client, configuration_set=settings.ses_configuration_set)
    if name == "smtp":
        assert settings.smtp_url is not None  # enforced by Settings
        return SmtpProvider(settings.smtp_url.get_secret_value(), timeout=settings.provider_timeout)
    raise ValueError(f"unknown email provider {name!r}")

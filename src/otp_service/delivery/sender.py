"""Turn one job into one email: render the allowlisted template, take a send-rate token, call
the primary provider and fail over to the fallback, retrying with backoff until the deadline."""

import asyncio
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from markupsafe import escape

from otp_service import tracing
from otp_service.clock import Clock, system_clock
from otp_service.delivery.providers.base import (
    EmailProvider,
    OutgoingEmail,
    PermanentError,
    ProviderError,
    RateLimitedError,
    RetryableError,
)
from otp_service.delivery.templates import HEADERS, RenderedEmail, email_context, render_template, verify_link
from otp_service.errors import Unavailable
from otp_service.locales import Locale
from otp_service.logs import get_logger, mask_email
from otp_service.metrics import PROVIDER_CALLS, PROVIDER_LATENCY
from otp_service.settings import Settings

log = get_logger("delivery")

_CODE_SLOT = "CODESLOT" + secrets.token_hex(8)
"""Stands for the code in a template rendered once: letters and digits, which no escaping alters."""
_LINK_SLOT = "LINKSLOT" + secrets.token_hex(8)
"""Stands for the verify link (its address differs per email) the same way."""
_NOT_ME_SLOT = "NOTMESLOT" + secrets.token_hex(8)
"""Stands for the "Didn't ask for this?" link (its token differs per email) the same way."""

# Exponential backoff from 0.5 s, capped at 30 s, with full jitter (AWS architecture blog,
# "Exponential Backoff and Jitter").
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0


@dataclass(frozen=True, slots=True)
class Delivered:
    provider: str
    message_id: str
    attempts: int
    trace: str | None = None  # tracing on: the provider call's span context (otp_service/tracing)


@dataclass(frozen=True, slots=True)
class Wording:
    """How one email words its code: its language, and for a code emailed again
    (OTP_RESEND_STRATEGY=reuse) the time it has left."""

    locale: Locale = "bilingual"
    lifetime_seconds: int | None = None  # None: OTP_CODE_TTL
    repeated: bool = False


PLAIN = Wording()


class DeliveryFailed(Exception):
    def __init__(self, reason: str, *, permanent: bool, attempts: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.attempts = attempts


class SendRateLimiter(Protocol):
    """The service-wide provider call rate (limits/send_rate.py)."""

    async def try_take(self) -> int:
        """0 when a token was taken, else ms until one may be."""
        ...


async def acquire(
    limiter: SendRateLimiter, *, deadline: float | None = None, clock: Clock = system_clock
) -> None:
    """Wait for a send-rate token; DeliveryFailed (not permanent) when none comes before
    `deadline` (epoch s): an email must not leave after its code expired."""
    while wait := await limiter.try_take():
        if deadline is not None and clock() + wait / 1000 >= deadline:
            raise DeliveryFailed("gave up before expiry: waiting for the send rate", permanent=False)
        await asyncio.sleep(wait / 1000)


class Superseded(Exception):
    """The job's code is no longer its address's live code: a newer send replaced it, or it was
    used or expired. Never email a code after its successor."""


CurrentCheck = Callable[[], Awaitable[bool | None]]
"""Whether the job's code is still live: True, False (superseded), or None (the store could not
say before the code expires)."""


async def _always_current() -> bool:
    return True


def always_healthy(_provider: str) -> bool:
    return True


def backoff(attempt: int, rng: Callable[[float, float], float] = random.uniform) -> float:
    return rng(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


class Deliverer:
    def __init__(
        self,
        *,
        settings: Settings,
        primary: EmailProvider,
        fallback: EmailProvider | None,
        send_rate: SendRateLimiter,
        healthy: Callable[[str], bool] = always_healthy,
        clock: Clock = system_clock,
    ) -> None:
        self._s = settings
        # Each application's brand, sender, link and lifetime (CONTRACT §8); '' the service's.
        self._apps = settings.app_views()
        self._providers = [primary] if fallback is None else [primary, fallback]
        self._rate = send_rate
        self._clock = clock
        # The reputation guard's view: a paused provider is skipped (the fallback takes over).
        self._healthy = healthy
        self._rendered: dict[tuple[str, Locale, bool, str], RenderedEmail] = {}

    def _context(
        self, s: Settings, code: str, wording: Wording, link: str | None, not_me: str | None
    ) -> dict[str, Any]:
        # Everything but the code, the link and the wording is fixed by the application's settings.
        lifetime = s.code_ttl if wording.lifetime_seconds is None else wording.lifetime_seconds
        return email_context(
            brand=s.brand_name,
            code=code,
            lifetime_seconds=lifetime,
            sender=s.email_from,
            website_url=s.website_url,
            support_email=s.support_email,
            locale=wording.locale,
            repeated=wording.repeated,
            verify_link=link,
            not_me_link=not_me,
            not_me_hours=self._s.not_me_hours,
        )

    def build(
        self, template_id: str, to: str, code: str, idempotency_key: str, wording: Wording = PLAIN,
        not_me_link: str | None = None, app: str = "",
    ) -> OutgoingEmail:  # fmt: skip
        """`not_me_link`: this send's "Didn't ask for this?" link (delivery/not_me.py), or None.
        `app`: the application whose email it is (a job of an application since removed from
        OTP_APPS goes out as the service-wide application's)."""
        s = self._apps.get(app, self._s)
        template = s.verify_link_template
        link = verify_link(template, to, code) if template is not None else None
        if code.isascii() and code.isdigit() and wording.lifetime_seconds is None and not wording.repeated:
            # Rendered once per template and language with placeholders for the code and the
            # links; digits need no escaping in either part, and the links are escaped for HTML
            # here as the template would, so putting them in their places gives what rendering would.
            shape = (template_id, wording.locale, not_me_link is not None, s.app)
            rendered = self._rendered.get(shape)
            if rendered is None:
                slots = (_LINK_SLOT if link else None, _NOT_ME_SLOT if not_me_link else None)
                rendered = self._rendered[shape] = render_template(
                    template_id, self._context(s, _CODE_SLOT, wording, *slots)
                )
            text, html = rendered.text.replace(_CODE_SLOT, code), rendered.html.replace(_CODE_SLOT, code)
            for slot, value in ((_LINK_SLOT, link), (_NOT_ME_SLOT, not_me_link)):
                if value is not None:
                    text, html = text.replace(slot, value), html.replace(slot, str(escape(value)))
        else:  # a re-sent code states its own time left: rendered for it
            rendered = render_template(template_id, self._context(s, code, wording, link, not_me_link))
            text, html = rendered.text, rendered.html
        return OutgoingEmail(
            to=to,
            sender=s.email_from,
            subject=rendered.subject,
            text=text,
            html=html,
            idempotency_key=idempotency_key,
            headers=HEADERS,
        )

    async def _call(self, provider: EmailProvider, email: OutgoingEmail) -> str:
        started = time.perf_counter()
        outcome = "error"
        try:
            async with asyncio.timeout(self._s.provider_timeout + 1):
                message_id = await provider.send(email)
            outcome = "ok"
            return message_id
        except TimeoutError:
            raise RetryableError(provider.name, "timeout") from None
        finally:
            PROVIDER_CALLS.labels(provider.name, outcome).inc()
            PROVIDER_LATENCY.labels(provider.name).observe(time.perf_counter() - started)

    async def send_template(
        self,
        template_id: str,
        to: str,
        code: str,
        *,
        idempotency_key: str,
        deadline: float,
        wording: Wording = PLAIN,
        current: CurrentCheck = _always_current,
        passes_pause: bool = False,
        not_me_link: str | None = None,
        app: str = "",
    ) -> Delivered:
        """The one entry point that sends: only allowlisted templates, until `deadline` (epoch s).
        `current` is asked before every provider attempt, retries included: Superseded when the
        code was replaced meanwhile. A paused provider is skipped for a healthy one; with every
        provider paused the email waits, unless it `passes_pause` (a remembered source's, or a
        captcha-vouched one: CONTRACT §6), which goes through the preferred provider regardless."""
        email = self.build(template_id, to, code, idempotency_key, wording, not_me_link, app)
        attempt = 0
        last: ProviderError | None = None
        while True:
            wait = 0.0
            providers = [p for p in self._providers if self._healthy(p.name)]
            if not providers and passes_pause:
                providers = self._providers
            elif not providers:
                wait = 5.0  # every provider paused: hold the job until the guard or an operator resumes one
            for provider in providers:
                try:
                    await acquire(self._rate, deadline=deadline, clock=self._clock)
                except Unavailable:
                    wait = max(wait, 1.0)
                    break
                except DeliveryFailed as exc:
                    exc.attempts = attempt
                    raise
                live = await current()
                if live is None:
                    raise DeliveryFailed(
                        "gave up before expiry: the code store", permanent=False, attempts=attempt
                    )
                if not live:
                    raise Superseded()
                attempt += 1
                trace = None
                try:
                    if tracing.hooks is None:
                        message_id = await self._call(provider, email)
                    else:  # OpenTelemetry configured: the call is a span of the job's trace
                        call = self._call(provider, email)
                        message_id, trace = await tracing.hooks.provider_call(provider.name, attempt, call)
                except PermanentError as exc:
                    log.warning(
                        "delivery.provider_refused",
                        extra={
                            "provider": provider.name,
                            "reason": exc.reason,
                            "email": mask_email(to),
                        },
                    )
                    raise DeliveryFailed(exc.reason, permanent=True, attempts=attempt) from exc
                except RateLimitedError as exc:
                    last = exc
                    wait = max(wait, exc.retry_after or 1.0)
                    log.info("delivery.provider_rate_limited", extra={"provider": provider.name})
                    break
                except RetryableError as exc:
                    last = exc
                    wait = max(wait, exc.retry_after or 0.0)
                    log.warning(
                        "delivery.provider_failed",
                        extra={"provider": provider.name, "reason": exc.reason, "attempt": attempt},
                    )
                    continue
                return Delivered(provider.name, message_id, attempt, trace)
            delay = max(wait, backoff(attempt))
            if self._clock() + delay >= deadline:
                reason = last.reason if last else "send rate unavailable"
                raise DeliveryFailed(f"gave up before expiry: {reason}", permanent=False, attempts=attempt)
            await asyncio.sleep(delay)

"""The optional captcha (CONTRACT §2, §3): a send carries `captcha_token`, which the provider's
siteverify endpoint must accept. Turnstile, hCaptcha and reCAPTCHA share the protocol: a form
POST of `secret`, `response` and `remoteip`, answered with JSON `{"success": true|false, …}`.

Missing or refused: 400 captcha_failed. Siteverify unreachable, slow, or answering anything but
a 200 with that JSON: 503 unavailable. A captcha that cannot be checked fails closed: letting
sends through unchecked is what it exists to prevent.
"""

from typing import Literal

import httpx

from otp_service.errors import CaptchaFailed, Unavailable
from otp_service.logs import get_logger
from otp_service.metrics import CAPTCHA_CHECKS

log = get_logger("validation")

CaptchaProvider = Literal["turnstile", "hcaptcha", "recaptcha"]

VERIFY_URLS: dict[str, str] = {
    "turnstile": "https://challenges.cloudflare.com/turnstile/v0/siteverify",
    "hcaptcha": "https://api.hcaptcha.com/siteverify",
    "recaptcha": "https://www.google.com/recaptcha/api/siteverify",
}
TIMEOUT = 3.0
"""Seconds for the whole siteverify call: a user is waiting for the send's answer."""

MAX_TOKEN = 4096
"""Providers' tokens are up to ~2 KiB; anything longer is refused without a call."""


class CaptchaCheck:
    def __init__(
        self, http: httpx.AsyncClient, *, provider: CaptchaProvider, secret: str, url: str | None
    ) -> None:
        self._http = http
        self.provider = provider
        self._secret = secret
        self._url = url or VERIFY_URLS[provider]

    async def check(self, token: str | None, remote_ip: str) -> None:
        """Returns when the provider accepted the token; raises CaptchaFailed or Unavailable."""
        if not token or len(token) > MAX_TOKEN:
            CAPTCHA_CHECKS.labels("missing").inc()
            raise CaptchaFailed("captcha_token is required")
        form = {"secret": self._secret, "response": token, "remoteip": remote_ip}
        try:
            res = await self._http.post(self._url, data=form, timeout=TIMEOUT)
            success = res.json().get("success") if res.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            success, status = None, type(exc).__name__
        else:
            status = str(res.status_code)
        if success is True:
            CAPTCHA_CHECKS.labels("passed").inc()
            return
        if success is False:
            CAPTCHA_CHECKS.labels("refused").inc()
            raise CaptchaFailed("The captcha was not accepted")
        CAPTCHA_CHECKS.labels("unavailable").inc()
        log.warning("captcha.unavailable", extra={"provider": self.provider, "status": status})
        raise Unavailable("The captcha provider is not answering")

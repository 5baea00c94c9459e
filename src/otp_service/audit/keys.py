"""Bearer checks: the admin API's keys (which presented key is valid, checked in constant time,
and the fingerprint the audit log names it by), and who may read /metrics."""

import hmac
import ipaddress

from otp_service.audit.service import key_fingerprint
from otp_service.errors import Unauthorized


class AdminKeys:
    """The bearer keys of `/api/v1/admin/*` (OTP_ADMIN_API_KEYS), built once from the settings."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [(k.encode(), key_fingerprint(k.encode())) for k in keys]

    def check(self, authorization: str) -> str:
        """The presented key's fingerprint (what the audit log names), or Unauthorized."""
        scheme, _, presented = authorization.partition(" ")
        presented_bytes = presented.strip().encode()
        # Compare against every key, always, in constant time: neither which key nor how much of
        # it matched shows in the response time.
        matched = ""
        for key, fingerprint in self._keys:
            if hmac.compare_digest(presented_bytes, key):
                matched = fingerprint
        if scheme.lower() != "bearer" or not presented_bytes or not matched:
            raise Unauthorized()
        return matched


class MetricsAccess:
    """Who may read /metrics: the bearer of OTP_METRICS_TOKEN, or without a token only a caller
    whose client address (CONTRACT §2a) is loopback."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None

    def check(self, authorization: str, client_ip: str) -> None:
        if self._token is not None:
            scheme, _, presented = authorization.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), self._token):
                raise Unauthorized()
            return
        try:
            loopback = ipaddress.ip_address(client_ip).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise Unauthorized()

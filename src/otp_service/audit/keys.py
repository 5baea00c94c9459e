"""The admin API's keys: which presented bearer key is valid, checked in constant time, and the
fingerprint the audit log names it by."""

import hmac

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

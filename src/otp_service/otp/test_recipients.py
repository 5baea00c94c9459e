"""Test recipients (OTP_TEST_RECIPIENTS, CONTRACT §3): addresses, or every address of a
`*@domain`, that app-store reviewers and CI suites sign in with. A send answers the same 202 and
counts against the client's rates, but nothing is stored, queued or emailed and no daily or global
counter moves; the configured fixed code verifies (constant-time), any number of times."""

import hmac


class TestRecipients:
    __test__ = False  # not a pytest test class

    def __init__(self, recipients: dict[str, str]) -> None:
        self._addresses = {k: v for k, v in recipients.items() if not k.startswith("*@")}
        self._domains = {k[2:]: v for k, v in recipients.items() if k.startswith("*@")}

    def __len__(self) -> int:
        return len(self._addresses) + len(self._domains)

    def code_for(self, email: str) -> str | None:
        """The fixed code of a normalised address, or None when it is not a test recipient."""
        if not self:
            return None
        code = self._addresses.get(email)
        if code is None:
            code = self._domains.get(email.rpartition("@")[2])
        return code

    @staticmethod
    def matches(fixed: str, code: str) -> bool:
        return hmac.compare_digest(fixed.encode(), code.encode())

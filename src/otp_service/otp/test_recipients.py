"""Test recipients (OTP_TEST_RECIPIENTS, CONTRACT §3): addresses, or every address of a
`*@domain`, that app-store reviewers and CI suites sign in with. A send answers the same 202 and
makes the fixed code the address's live code (lifetime, single use, wrong attempts as any code's;
an entry's wrong guesses are counted together across all its addresses), but nothing is queued
or emailed and no daily, domain or global counter moves (otp/lua/send.lua, verify.lua)."""


class TestRecipients:
    __test__ = False  # not a pytest test class

    def __init__(self, recipients: dict[str, str]) -> None:
        self._addresses = {k: v for k, v in recipients.items() if not k.startswith("*@")}
        self._domains = {k[2:]: v for k, v in recipients.items() if k.startswith("*@")}

    def __len__(self) -> int:
        return len(self._addresses) + len(self._domains)

    def code_for(self, email: str) -> str | None:
        """The fixed code of a normalised address, or None when it is not a test recipient."""
        entry = self.entry_for(email)
        return None if entry is None else entry[1]

    def entry_for(self, email: str) -> tuple[str, str] | None:
        """The entry (`OTP_TEST_RECIPIENTS`'s key: the address, or `*@domain`) and its fixed code,
        or None when the address is not a test recipient."""
        if not self:
            return None
        code = self._addresses.get(email)
        if code is not None:
            return email, code
        domain = email.rpartition("@")[2]
        code = self._domains.get(domain)
        return None if code is None else (f"*@{domain}", code)

"""Mailboxes, not spellings (CONTRACT §6): one key for every spelling of one inbox.

`A.B+x@GoogleMail.com` and `ab@gmail.com` reach the same inbox, so they share one cooldown, one
daily cap, one live code and one suppression record: the key drops a `+tag`, drops the dots of
the local part on OTP_DOT_INSENSITIVE_DOMAINS, and names a domain by its canonical alias. Codes
and emails still go to the address exactly as typed; only limits and look-ups use the key.
"""

from collections.abc import Iterable

from otp_service.settings import Settings

DOMAIN_ALIASES = {"googlemail.com": "gmail.com"}
"""Domains that are another domain's inboxes under a second name."""


class Mailboxes:
    def __init__(self, dot_insensitive: Iterable[str]) -> None:
        self._dotless = frozenset(d.lower() for d in dot_insensitive)

    @classmethod
    def of(cls, settings: Settings) -> "Mailboxes":
        return cls(settings.dot_insensitive_domains)

    def key(self, email: str) -> str:
        """The mailbox of a normalised (lower-case) address."""
        local, _, domain = email.rpartition("@")
        base = local.split("+", 1)[0] or local  # "+tag" alone is an address of its own
        if domain in self._dotless:
            base = base.replace(".", "") or base
        return f"{base}@{DOMAIN_ALIASES.get(domain, domain)}"

"""Recipient domains (CONTRACT §6): whose budget a send counts against.

An attacker with a catch-all domain receives, and verifies, every code, so no conversion rule
stops them draining the service-wide cap from many networks. Each registrable domain
(`a.b.example.co.uk` is `example.co.uk`, by the public suffix list's ICANN section) gets at most
OTP_DOMAIN_DAILY_LIMIT sends per rolling 24 h; shared mail providers, whose users are unrelated
people, are exempt (their mailboxes have their own limits).
"""

from functools import lru_cache

from publicsuffixlist import PublicSuffixList

from otp_service.settings import Settings

# The list the package ships (no network), its ICANN section only: the private section names
# services where anyone can take a name (`x.duckdns.org`, `y.github.io`), and each such name
# would otherwise get a budget of its own (CONTRACT §6).
_PSL = PublicSuffixList(only_icann=True)


@lru_cache(maxsize=65536)
def registrable(domain: str) -> str:
    """The registrable domain (the public suffix and one label); a domain that is itself a
    public suffix, or unknown to the list, stands for itself."""
    return _PSL.privatesuffix(domain) or domain


class RecipientDomains:
    def __init__(self, *, limit: int, shared: frozenset[str]) -> None:
        self.limit = limit
        self._shared = shared

    @classmethod
    def of(cls, settings: Settings) -> "RecipientDomains":
        return cls(limit=settings.domain_daily_limit, shared=settings.shared_mail_providers())

    def budget(self, email: str) -> str | None:
        """The registrable domain whose daily budget this address counts against, or None for a
        shared mail provider."""
        domain = email.rpartition("@")[2]
        base = registrable(domain)
        if domain in self._shared or base in self._shared:
            return None
        return base

"""What a provider says about the domain it sends for, asked through its API (CONTRACT §9):
the DKIM records it signs with, the SPF its envelope (MAIL FROM) domain needs, and whether it
reports the identity verified. Providers with such an API (Resend, SES) implement
`IdentityProvider`; SMTP servers and the console have none.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

AMAZON_SES_SPF = "include:amazonses.com"
"""The SPF mechanism that authorises Amazon SES's servers, through which Resend sends as well
(https://docs.aws.amazon.com/ses/latest/dg/send-email-authentication-spf.html)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsRecord:
    name: str
    """Fully qualified, without the trailing dot."""
    type: str
    """`TXT`, `CNAME` or `MX`."""
    value: str
    """TXT: the text; CNAME and MX: the target name (MX: `10 feedback-smtp…`)."""

    def zone_line(self) -> str:
        """The record as an operator publishes it (zone-file syntax)."""
        value = f'"{self.value}"' if self.type == "TXT" else f"{self.value.rstrip('.')}."
        return f"{self.name}. {self.type} {value}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderIdentity:
    provider: str
    domain: str | None
    """The identity covering the From domain (the domain itself or a parent of it); None when the
    provider knows neither."""
    verified: bool
    dkim: tuple[DnsRecord, ...]
    """The records of the keys the provider signs with, under `domain` (DKIM's d=). Empty: it
    does not sign."""
    envelope: str | None
    """The envelope (MAIL FROM) domain, when it is the sender's own (SES's custom MAIL FROM,
    Resend's `send.` subdomain); None: the provider's own domain (SPF cannot align)."""
    spf: str
    """The SPF mechanism that authorises the provider."""
    records: tuple[DnsRecord, ...] = ()
    """Every record the provider asks the sender to publish (shown with a verification failure)."""


class IdentityUnavailable(Exception):
    """The provider did not answer about the identity (network, credentials, a sending-only
    key); the message is what the operator is told."""


class Named(Protocol):
    """Any email provider (delivery/providers/base.EmailProvider): this package only needs its
    name, and asks it for its identity when it is an IdentityProvider. (The providers import this
    module, so it imports none of theirs.)"""

    name: str


@runtime_checkable
class IdentityProvider(Protocol):
    name: str

    async def sender_identity(self, candidates: Sequence[str]) -> SenderIdentity:
        """The first of `candidates` (the From domain, then its parents up to the registrable
        domain) that the provider knows; `domain=None` when it knows none. Raises
        IdentityUnavailable."""
        ...

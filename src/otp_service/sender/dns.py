"""DNS reads for the sender check, through the resolver the deliverability check uses
(validation/deliverability.make_resolver: OTP_DNS_NAMESERVERS, each read bounded by
OTP_DNS_TIMEOUT). A timeout, SERVFAIL or NXDOMAIN is an answer here, never an exception: each
becomes a failed check that says what DNS answered."""

from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver

from otp_service.settings import Settings, parse_nameserver
from otp_service.validation.deliverability import make_resolver


@dataclass(frozen=True, slots=True)
class Answer:
    name: str
    values: tuple[str, ...] = ()
    """TXT: each record's strings joined; CNAME: the target without its trailing dot."""
    missing: str | None = None
    """A negative answer: `no such name (NXDOMAIN)` or `no TXT record`."""
    error: str | None = None
    """No answer at all: a timeout, SERVFAIL, an unreachable resolver."""

    @property
    def problem(self) -> str | None:
        return self.error or self.missing


class DnsReader:
    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self._resolver = resolver

    @classmethod
    def of(cls, settings: Settings) -> "DnsReader":
        nameservers = [parse_nameserver(n) for n in settings.dns_nameservers]
        return cls(make_resolver(nameservers, settings.dns_timeout))

    async def txt(self, name: str) -> Answer:
        return await self._read(name, "TXT")

    async def cname(self, name: str) -> Answer:
        return await self._read(name, "CNAME")

    async def _read(self, name: str, rdtype: str) -> Answer:
        try:
            answer = await self._resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            return Answer(name, missing="no such name (NXDOMAIN)")
        except dns.resolver.NoAnswer:
            return Answer(name, missing=f"no {rdtype} record")
        except dns.resolver.LifetimeTimeout:
            return Answer(name, error=f"DNS did not answer within {self._resolver.lifetime:g} s")
        except (dns.exception.DNSException, OSError) as exc:
            # SERVFAIL from every server, refused, unreachable, a name dnspython cannot encode.
            return Answer(name, error=f"DNS failed: {type(exc).__name__}")
        if rdtype == "TXT":
            values = tuple(b"".join(r.strings).decode("utf-8", "replace") for r in answer)
        else:
            values = tuple(r.to_text().rstrip(".").lower() for r in answer)
        return Answer(name, values)

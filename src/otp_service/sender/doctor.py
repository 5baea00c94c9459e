"""Every sender check for OTP_EMAIL_FROM and each configured provider, and their text for the
terminal (`otp-service doctor`). DMARC is the From domain's, checked once; SPF, DKIM, alignment
and verification are each provider's, asked through its API."""

from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parseaddr

from otp_service.logs import get_logger
from otp_service.sender.checks import (
    Check,
    DmarcPolicy,
    Result,
    Status,
    candidates,
    check_alignment,
    check_dkim,
    check_dmarc,
    check_spf,
    check_verified,
)
from otp_service.sender.dns import DnsReader
from otp_service.sender.identity import IdentityProvider, IdentityUnavailable, Named

log = get_logger("sender")


@dataclass(frozen=True, slots=True)
class Report:
    sender: str
    domain: str
    results: tuple[Result, ...]

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.status is Status.FAIL]

    def by_check(self) -> dict[Check, bool]:
        """Each check that ran: True when it passed for every provider (otp_sender_check)."""
        verdicts: dict[Check, bool] = {}
        for r in self.results:
            if r.status is not Status.SKIP:
                verdicts[r.check] = verdicts.get(r.check, True) and r.status is Status.PASS
        return verdicts


def from_domain(sender: str) -> str:
    return parseaddr(sender)[1].rpartition("@")[2].strip().rstrip(".").lower()


async def _provider_checks(
    dns: DnsReader, domain: str, provider: Named, policy: DmarcPolicy | None
) -> list[Result]:
    names = candidates(domain)
    if not isinstance(provider, IdentityProvider):
        why = f"{provider.name} has no API to ask which DKIM key it signs with: check its DKIM yourself"
        return [
            await check_spf(dns, domain=domain, mechanism=None, provider=provider.name),
            *(Result(check=c, status=Status.SKIP, provider=provider.name, detail=why)
              for c in (Check.DKIM, Check.ALIGNMENT, Check.VERIFIED)),
        ]  # fmt: skip
    try:
        identity = await provider.sender_identity(names)
    except IdentityUnavailable as exc:
        problem = str(exc)
    except Exception as exc:
        # A diagnostic: whatever the provider's client raises (an exception its transport does not
        # wrap, an answer of a shape never seen) is this check failing, logged with its traceback,
        # not a loop restarted every 30 s until the next deployment.
        log.warning("sender.provider_query_failed", exc_info=True, extra={"provider": provider.name})
        problem = f"{provider.name}: asking for the identity failed: {type(exc).__name__}"
    else:
        envelope = identity.envelope or domain
        spf = await check_spf(dns, domain=envelope, mechanism=identity.spf, provider=provider.name)
        dkim = await check_dkim(dns, identity)
        alignment = check_alignment(domain, identity, spf=spf, dkim=dkim, policy=policy)
        return [spf, dkim, alignment, check_verified(identity, names)]
    return [
        Result(check=c, status=Status.FAIL, provider=provider.name, detail=problem,
               publish=(f"make {provider.name} answer, then run `otp-service doctor` again",))
        for c in (Check.SPF, Check.DKIM, Check.ALIGNMENT, Check.VERIFIED)
    ]  # fmt: skip


async def check_sender(sender: str, providers: Sequence[Named], dns: DnsReader) -> Report:
    domain = from_domain(sender)
    dmarc, policy = await check_dmarc(dns, domain)
    results = [dmarc]
    for provider in providers:
        results += await _provider_checks(dns, domain, provider, policy)
    return Report(sender, domain, tuple(results))


def render(report: Report) -> str:
    """One line per check (`PASS`, `FAIL` or `SKIP`, the check, the provider, what was found),
    each failure followed by the records to publish, and a last line counting the failures."""
    lines = [f"Sender check for {report.sender} (From domain {report.domain})"]
    for r in report.results:
        lines.append(f"{r.status.upper():<5} {r.check:<10} {r.provider or '':<7} {r.detail}".rstrip())
        lines += [f"      publish: {line}" for line in r.publish if r.status is Status.FAIL]
    checked = sum(r.status is not Status.SKIP for r in report.results)
    failed = len(report.failed)
    lines.append(f"{failed} of {checked} checks failed" if failed else f"all {checked} checks passed")
    return "\n".join(lines) + "\n"

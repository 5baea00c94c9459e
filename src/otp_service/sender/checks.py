"""The sender checks (CONTRACT §9), one small function each: a pass, or a fail that says what
DNS or the provider answered and the record to publish.

- `spf`: the envelope domain (the provider's custom MAIL FROM, else the From domain) publishes
  one SPF record that authorises the provider, following include: and redirect= as receivers do.
- `dkim`: every record the provider says it signs with is in DNS as it says.
- `dmarc`: a DMARC record (`p=none` at least) at `_dmarc.<From domain>`, else at its
  organisational domain, the registrable domain (RFC 7489 §6.6.3).
- `alignment`: DKIM's d= or the SPF envelope domain is the From domain's (relaxed: the same
  organisational domain; strict when the DMARC record says adkim=s / aspf=s).
- `verified`: the provider reports the identity verified.
"""

from dataclasses import dataclass
from enum import StrEnum

from otp_service.sender.dns import Answer, DnsReader
from otp_service.sender.identity import DnsRecord, SenderIdentity
from otp_service.validation.domains import registrable

SPF_LOOKUPS = 10
"""RFC 7208 §4.6.4: at most 10 DNS-querying terms per SPF evaluation; beyond that, permerror."""


class Check(StrEnum):
    SPF = "spf"
    DKIM = "dkim"
    DMARC = "dmarc"
    ALIGNMENT = "alignment"
    VERIFIED = "verified"


class Status(StrEnum):
    PASS = "pass"  # noqa: S105 (a check passed, not a password)
    FAIL = "fail"
    SKIP = "skip"
    """Not checkable with this provider (SMTP and the console have no API to ask)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    check: Check
    status: Status
    detail: str
    provider: str | None = None
    publish: tuple[str, ...] = ()
    """On a failure: the records to publish (zone-file lines), or what to do."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DmarcPolicy:
    domain: str
    strict_dkim: bool = False
    strict_spf: bool = False


def _fail(check: Check, provider: str | None, *, detail: str, publish: tuple[str, ...] = ()) -> Result:
    return Result(check=check, status=Status.FAIL, provider=provider, detail=detail, publish=publish)


def _pass(check: Check, provider: str | None, detail: str) -> Result:
    return Result(check=check, status=Status.PASS, provider=provider, detail=detail)


def organisational(domain: str) -> str:
    return registrable(domain)


def candidates(domain: str) -> list[str]:
    """The From domain, then each parent down to its organisational domain: the identities a
    provider may know it by."""
    org = organisational(domain)
    labels = domain.split(".")
    names = [".".join(labels[i:]) for i in range(len(labels))]
    return names[: names.index(org) + 1] if org in names else [domain]


def _tags(record: str) -> dict[str, str]:
    """`k=v; k=v` (DKIM and DMARC tag lists), names lower-cased, whitespace dropped from values."""
    tags: dict[str, str] = {}
    for part in record.split(";"):
        name, eq, value = part.partition("=")
        if eq:
            tags[name.strip().lower()] = "".join(value.split())
    return tags


def _spf_records(answer: Answer) -> list[str]:
    return [
        v.strip() for v in answer.values if v.strip().lower() == "v=spf1" or v.lower().startswith("v=spf1 ")
    ]


def _with_mechanism(record: str, mechanism: str) -> str:
    """`record` with `mechanism` added before its `all` (or redirect=), else at the end."""
    terms = record.split()
    for i, term in enumerate(terms[1:], 1):
        if term.lstrip("+-~?").lower() == "all" or term.lower().startswith("redirect="):
            return " ".join([*terms[:i], mechanism, *terms[i:]])
    return " ".join([*terms, mechanism])


async def _authorises(dns: DnsReader, record: str, mechanism: str, budget: list[int]) -> bool:
    """Whether `record` passes `mechanism`'s servers: the mechanism itself (qualifier + or none),
    or an include: / redirect= whose record does, within RFC 7208's lookup limit."""
    wanted = mechanism.lower()
    for term in record.split()[1:]:
        lowered = term.lower()
        if lowered == wanted or lowered == "+" + wanted:
            return True
        target = None
        if lowered.startswith(("include:", "+include:")):
            target = lowered.partition(":")[2]
        elif lowered.startswith("redirect="):
            target = lowered.partition("=")[2]
        if target is None or budget[0] <= 0:
            continue
        budget[0] -= 1
        nested = _spf_records(await dns.txt(target))
        if len(nested) == 1 and await _authorises(dns, nested[0], mechanism, budget):
            return True
    return False


async def check_spf(dns: DnsReader, *, domain: str, mechanism: str | None, provider: str | None) -> Result:
    """One SPF record at `domain` that authorises `mechanism` (any SPF record when the
    provider's servers are not known: SMTP)."""
    suggested = f"v=spf1 {mechanism or '<your mail servers, e.g. mx or include:…>'} ~all"
    answer = await dns.txt(domain)
    if answer.error:
        return _fail(
            Check.SPF, provider, detail=f"{domain}: {answer.error}", publish=(f'{domain}. TXT "{suggested}"',)
        )
    records = _spf_records(answer)
    if not records:
        return _fail(
            Check.SPF,
            provider,
            detail=f"{domain} publishes no SPF record ({answer.missing or 'no v=spf1 TXT record'})",
            publish=(f'{domain}. TXT "{suggested}"',),
        )
    if len(records) > 1:
        merged = _with_mechanism(records[0], mechanism) if mechanism else records[0]
        return _fail(
            Check.SPF,
            provider,
            detail=f"{domain} publishes {len(records)} SPF records, which makes SPF fail "
            "(RFC 7208 §3.2: permerror): keep one",
            publish=(f'{domain}. TXT "{merged}" (and no other)',),
        )
    record = records[0]
    if mechanism is not None and not await _authorises(dns, record, mechanism, [SPF_LOOKUPS]):
        return _fail(
            Check.SPF,
            provider,
            detail=f"{domain}: {record!r} does not authorise {provider} ({mechanism})",
            publish=(f'{domain}. TXT "{_with_mechanism(record, mechanism)}"',),
        )
    return _pass(Check.SPF, provider, f"{domain}: {record}")


def _matches(record: DnsRecord, answer: Answer) -> bool:
    if record.type == "TXT":
        key = _tags(record.value).get("p")
        return any(_tags(value).get("p") == key for value in answer.values) if key else False
    return record.value.rstrip(".").lower() in answer.values


async def check_dkim(dns: DnsReader, identity: SenderIdentity) -> Result:
    """Every DKIM record the provider signs with is published as the provider says."""
    if not identity.dkim:
        return _fail(
            Check.DKIM,
            identity.provider,
            detail=f"{identity.provider} reports no DKIM key for {identity.domain}: it does not sign",
            publish=(
                f"enable DKIM signing for {identity.domain} in {identity.provider}, then publish its records",
            ),
        )
    wrong: list[str] = []
    publish: list[str] = []
    for record in identity.dkim:
        answer = await (dns.txt(record.name) if record.type == "TXT" else dns.cname(record.name))
        if not _matches(record, answer):
            found = answer.problem or f"found {', '.join(answer.values)}"
            wrong.append(f"{record.name}: {found}")
            publish.append(record.zone_line())
    if wrong:
        return _fail(Check.DKIM, identity.provider, detail="; ".join(wrong), publish=tuple(publish))
    names = ", ".join(r.name for r in identity.dkim)
    return _pass(Check.DKIM, identity.provider, names)


async def _dmarc_at(dns: DnsReader, domain: str) -> tuple[Answer, list[str]]:
    answer = await dns.txt(f"_dmarc.{domain}")
    return answer, [v.strip() for v in answer.values if v.strip().upper().startswith("V=DMARC1")]


async def check_dmarc(dns: DnsReader, domain: str) -> tuple[Result, DmarcPolicy | None]:
    """A DMARC record at the From domain, else at its organisational domain, with p=none at
    least; the policy's alignment modes for the alignment check."""
    org = organisational(domain)
    publish = (f'_dmarc.{org}. TXT "v=DMARC1; p=none" (add rua=mailto:… to receive reports)',)
    seen: list[str] = []
    for at in dict.fromkeys([domain, org]):
        answer, records = await _dmarc_at(dns, at)
        if answer.error:
            return _fail(Check.DMARC, None, detail=f"_dmarc.{at}: {answer.error}", publish=publish), None
        if len(records) > 1:
            detail = (
                f"_dmarc.{at} has {len(records)} DMARC records, so receivers apply none (RFC 7489 §6.6.3)"
            )
            return _fail(Check.DMARC, None, detail=detail, publish=publish), None
        if records:
            tags = _tags(records[0])
            if tags.get("p", "").lower() not in ("none", "quarantine", "reject"):
                detail = f"_dmarc.{at}: {records[0]!r} has no valid p= (none, quarantine or reject)"
                return _fail(Check.DMARC, None, detail=detail, publish=publish), None
            inherited = f" (organisational domain of {domain})" if at != domain else ""
            policy = DmarcPolicy(
                domain=at,
                strict_dkim=tags.get("adkim", "r").lower() == "s",
                strict_spf=tags.get("aspf", "r").lower() == "s",
            )
            return _pass(Check.DMARC, None, f"_dmarc.{at}{inherited}: {records[0]}"), policy
        seen.append(f"_dmarc.{at}: {answer.missing or 'no v=DMARC1 record'}")
    return _fail(Check.DMARC, None, detail="; ".join(seen), publish=publish), None


def aligned(domain: str, from_domain: str, *, strict: bool) -> bool:
    if strict:
        return domain == from_domain
    return organisational(domain) == organisational(from_domain)


def check_alignment(
    from_domain: str, identity: SenderIdentity, *, spf: Result, dkim: Result, policy: DmarcPolicy | None
) -> Result:
    """DMARC passes only when DKIM's d= or SPF's envelope domain is aligned with the From domain."""
    policy = policy or DmarcPolicy(domain=from_domain)
    reasons: list[str] = []
    if identity.domain is not None and aligned(identity.domain, from_domain, strict=policy.strict_dkim):
        if dkim.status is Status.PASS:
            return _pass(
                Check.ALIGNMENT, identity.provider, f"DKIM d={identity.domain} aligns with {from_domain}"
            )
        reasons.append(f"DKIM d={identity.domain} would align, but its records are not all published")
    else:
        mode = "strict (adkim=s)" if policy.strict_dkim else "relaxed"
        reasons.append(f"DKIM d={identity.domain or '?'} does not align with {from_domain} ({mode})")
    if identity.envelope is None:
        reasons.append(f"the envelope domain is {identity.provider}'s own, so SPF cannot align")
    elif not aligned(identity.envelope, from_domain, strict=policy.strict_spf):
        reasons.append(f"the envelope domain {identity.envelope} does not align with {from_domain}")
    elif spf.status is Status.PASS:
        return _pass(
            Check.ALIGNMENT, identity.provider, f"SPF envelope {identity.envelope} aligns with {from_domain}"
        )
    else:
        reasons.append(f"the envelope domain {identity.envelope} would align, but its SPF fails")
    return Result(
        check=Check.ALIGNMENT,
        status=Status.FAIL,
        provider=identity.provider,
        detail="; ".join(reasons),
        publish=(f"fix the dkim check: {identity.provider} signs as d={identity.domain}",)
        if identity.dkim
        and identity.domain
        and aligned(identity.domain, from_domain, strict=policy.strict_dkim)
        else tuple(r.zone_line() for r in identity.dkim),
    )


def check_verified(identity: SenderIdentity, names: list[str]) -> Result:
    if identity.domain is None:
        return Result(
            check=Check.VERIFIED,
            status=Status.FAIL,
            provider=identity.provider,
            detail=f"{identity.provider} knows none of {', '.join(names)}",
            publish=(
                f"add {names[0]} (or {names[-1]}) as a sending domain in {identity.provider}, publish the "
                "records it gives, and verify it",
            ),
        )
    if not identity.verified:
        return Result(
            check=Check.VERIFIED,
            status=Status.FAIL,
            provider=identity.provider,
            detail=f"{identity.provider} reports {identity.domain} not verified",
            publish=(
                *(r.zone_line() for r in identity.records or identity.dkim),
                f"then verify {identity.domain} in {identity.provider}",
            ),
        )
    return _pass(Check.VERIFIED, identity.provider, f"{identity.provider} reports {identity.domain} verified")

"""Can the domain receive email? Asked before anything is stored (CONTRACT §2, §3).

A domain receives email when it publishes MX records that are not a null MX (RFC 7505: one MX
of preference 0 pointing at "."), or, with no MX at all, an A or AAAA record (RFC 5321 §5.1's
implicit MX). It does not when it does not exist (NXDOMAIN), publishes a null MX, or has neither.

DNS trouble must never lock users out: a resolver that fails or does not answer within
OTP_DNS_TIMEOUT gives no verdict, and the send goes through (logged, counted). Verdicts are
cached per domain (deliverable 1 h, undeliverable 10 min, no verdict not at all), concurrent
sends to one new domain share one lookup, and the big providers are never looked up.
"""

import asyncio
from collections.abc import Iterable
from enum import StrEnum

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from otp_service.clock import Clock
from otp_service.logs import get_logger
from otp_service.metrics import DELIVERABILITY_CHECKS

log = get_logger("validation")

POSITIVE_TTL = 3600.0
NEGATIVE_TTL = 600.0
MAX_CACHED = 100_000
"""Domains remembered at most (the oldest entry goes first): an attacker cycling random
domains costs lookups, not memory."""


class Verdict(StrEnum):
    DELIVERABLE = "deliverable"
    UNDELIVERABLE = "undeliverable"
    UNKNOWN = "unknown"
    """The resolver failed or timed out: let the send through."""


def make_resolver(nameservers: Iterable[tuple[str, int]], timeout: float) -> dns.asyncresolver.Resolver:
    """dnspython's asyncio resolver: the given servers, else the system's (/etc/resolv.conf)."""
    servers = list(nameservers)
    try:
        resolver = dns.asyncresolver.Resolver(configure=not servers)
    except dns.resolver.NoResolverConfiguration:
        log.warning("dns.no_system_resolver")  # every lookup then fails: the check lets sends through
        resolver = dns.asyncresolver.Resolver(configure=False)
    if servers:
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in servers]
    resolver.timeout = timeout
    resolver.lifetime = timeout
    resolver.cache = None  # verdicts are cached here, per domain
    return resolver


class DeliverabilityCheck:
    def __init__(
        self, resolver: dns.asyncresolver.Resolver, *, never_look_up: Iterable[str], clock: Clock
    ) -> None:
        self._resolver = resolver
        self._skip = frozenset(never_look_up)
        self._clock = clock
        self._cache: dict[str, tuple[Verdict, float]] = {}
        self._pending: dict[str, asyncio.Future[Verdict]] = {}

    async def verdict(self, domain: str) -> Verdict:
        if domain in self._skip:
            return Verdict.DELIVERABLE
        cached = self._cache.get(domain)
        if cached is not None:
            if cached[1] > self._clock():
                return cached[0]
            del self._cache[domain]
        pending = self._pending.get(domain)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._pending[domain] = future
        try:
            verdict = await self._look_up(domain)
            future.set_result(verdict)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            del self._pending[domain]
        DELIVERABILITY_CHECKS.labels(verdict).inc()
        if verdict is Verdict.UNKNOWN:
            return verdict
        if len(self._cache) >= MAX_CACHED:
            del self._cache[next(iter(self._cache))]
        ttl = POSITIVE_TTL if verdict is Verdict.DELIVERABLE else NEGATIVE_TTL
        self._cache[domain] = (verdict, self._clock() + ttl)
        return verdict

    async def _look_up(self, domain: str) -> Verdict:
        try:
            try:
                mx = await self._resolver.resolve(domain, "MX", search=False)
            except dns.resolver.NoAnswer:
                return await self._implicit_mx(domain)
            if all(record.exchange == dns.name.root for record in mx):
                return Verdict.UNDELIVERABLE  # null MX: "this domain accepts no mail"
            return Verdict.DELIVERABLE
        except dns.resolver.NXDOMAIN:
            return Verdict.UNDELIVERABLE
        except (dns.exception.DNSException, OSError) as exc:
            # SERVFAIL, refused, timeout, no reachable server, a name dnspython cannot encode.
            log.warning("dns.check_failed", extra={"domain": domain, "error": type(exc).__name__})
            return Verdict.UNKNOWN

    async def _implicit_mx(self, domain: str) -> Verdict:
        for rdtype in ("A", "AAAA"):
            try:
                await self._resolver.resolve(domain, rdtype, search=False)
                return Verdict.DELIVERABLE
            except dns.resolver.NoAnswer:
                continue
        return Verdict.UNDELIVERABLE

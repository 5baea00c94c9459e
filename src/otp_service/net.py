"""Who is calling (CONTRACT §2a): the client's IP, the client the per-client limits count, and
the subnet it belongs to.

The IP is the peer's, unless the peer is a trusted proxy; then X-Forwarded-For says it. A client
is an IPv4 address or an IPv6 address's /64 (one home connection or phone gets a whole /64, so
every address in it is the same caller); an IPv4-mapped IPv6 address is that IPv4 address. The
subnet (IPv4 /24, IPv6 /48) has a budget of its own, so an attacker spread over a block of
addresses still meets a limit.
"""

import ipaddress
import socket
from dataclasses import dataclass
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Client:
    """Who is calling, as the limits count it."""

    ip: str
    """The address the request came from (what a captcha provider is told)."""
    key: str
    """What per-client limits count: the IPv4 address, or the IPv6 address's client prefix."""
    subnet: str
    """What per-subnet limits count: the IPv4 or IPv6 subnet prefix."""


@dataclass(frozen=True, slots=True)
class Prefixes:
    ipv6_client: int = 64
    ipv4_subnet: int = 24
    ipv6_subnet: int = 48


_Ip = tuple[int, int]
"""(bits, value): 32 for IPv4, 128 for IPv6; parsed with inet_pton, ~10x cheaper than ipaddress."""


def _parse(text: str) -> _Ip | None:
    """An address, IPv4-mapped IPv6 unwrapped; None when it is not one."""
    try:
        if ":" not in text:
            return 32, int.from_bytes(socket.inet_pton(socket.AF_INET, text))
        value = int.from_bytes(socket.inet_pton(socket.AF_INET6, text.partition("%")[0]))
    except (OSError, ValueError):
        return None
    if value >> 32 == 0xFFFF:  # ::ffff:a.b.c.d
        return 32, value & 0xFFFFFFFF
    return 128, value


def _text(bits: int, value: int) -> str:
    if bits == 32:
        return socket.inet_ntop(socket.AF_INET, value.to_bytes(4))
    return socket.inet_ntop(socket.AF_INET6, value.to_bytes(16))


def _prefix(bits: int, value: int, length: int) -> str:
    shift = bits - length
    return f"{_text(bits, value >> shift << shift)}/{length}"


@lru_cache(maxsize=64)
def _networks(trusted: tuple[Network, ...]) -> tuple[tuple[int, int, int], ...]:
    """(bits, network value, mask) per trusted network, IPv4-mapped ones unwrapped."""
    out = []
    for net in trusted:
        bits, value, length = net.max_prefixlen, int(net.network_address), net.prefixlen
        if bits == 128 and value >> 32 == 0xFFFF and length >= 96:
            bits, value, length = 32, value & 0xFFFFFFFF, length - 96
        mask = ((1 << bits) - 1) ^ ((1 << (bits - length)) - 1)
        out.append((bits, value, mask))
    return tuple(out)


def _within(ip: _Ip, networks: tuple[tuple[int, int, int], ...]) -> bool:
    bits, value = ip
    return any(bits == b and value & mask == net for b, net, mask in networks)


def _identified(address: str, ip: _Ip | None, prefixes: Prefixes) -> Client:
    if ip is None:
        return Client(address, address, address)
    bits, value = ip
    text = _text(bits, value)
    if bits == 32:
        return Client(text, text, _prefix(32, value, prefixes.ipv4_subnet))
    return Client(text, _prefix(128, value, prefixes.ipv6_client), _prefix(128, value, prefixes.ipv6_subnet))


def resolve(
    peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...], prefixes: Prefixes
) -> Client:
    """The client and subnet of a request: X-Forwarded-For (every header line, in order, joined
    with commas) walked from the right, skipping trusted proxies; the first untrusted hop is the
    client, and anything left of it was written by the client and is not believed. Something
    that is not an IP address (a test transport's name) is its own client and subnet."""
    address, ip = _walk(peer, forwarded_for, trusted)
    return _identified(address, ip if ip is not None else _parse(address), prefixes)


def _walk(
    peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]
) -> tuple[str, _Ip | None]:
    """The client's address, and that address parsed when the walk parsed it (else None)."""
    ip = peer or "unknown"
    if not forwarded_for or not trusted:
        return ip, None
    networks = _networks(trusted)
    parsed = None
    # No peer address: a unix socket (serve --uds), whose peer is the local proxy in front; with
    # trusted proxies configured it is one of them.
    if peer is not None:
        parsed = _parse(ip.strip())
        if parsed is None or not _within(parsed, networks):
            return ip, parsed if ip == ip.strip() else None
    for hop in reversed(forwarded_for.split(",")):
        hop = hop.strip()
        if not hop:
            continue
        hop_ip = _parse(hop)
        if hop_ip is None:
            return ip, parsed  # a malformed hop: stop at the last address we could vouch for
        ip, parsed = hop, hop_ip
        if not _within(parsed, networks):
            return ip, parsed
    return ip, parsed

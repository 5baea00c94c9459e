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


def identify(address: str, prefixes: Prefixes) -> Client:
    """The client and subnet an address belongs to. Something that is not an IP address (a
    test transport's name) is its own client and subnet."""
    ip = _parse(address)
    if ip is None:
        return Client(address, address, address)
    bits, value = ip
    text = _text(bits, value)
    if bits == 32:
        return Client(text, text, _prefix(32, value, prefixes.ipv4_subnet))
    return Client(text, _prefix(128, value, prefixes.ipv6_client), _prefix(128, value, prefixes.ipv6_subnet))


def client_ip(peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """Walk X-Forwarded-For (every header line, in order, joined with commas) from the right,
    skipping trusted proxies: the first untrusted hop is the client. Anything left of it was
    written by the client and is not believed."""
    ip = peer or "unknown"
    if not forwarded_for or not trusted:
        return ip
    networks = _networks(trusted)
    parsed_peer = _parse(ip.strip())
    if parsed_peer is None or not _within(parsed_peer, networks):
        return ip
    for hop in reversed(forwarded_for.split(",")):
        hop = hop.strip()
        if not hop:
            continue
        parsed = _parse(hop)
        if parsed is None:
            return ip  # a malformed hop: stop at the last address we could vouch for
        ip = hop
        if not _within(parsed, networks):
            return ip
    return ip

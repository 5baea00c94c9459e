"""The client's IP: the peer, unless the peer is a trusted proxy; then X-Forwarded-For."""

import ipaddress
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _in(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: tuple[Network, ...]) -> bool:
    return any(ip in net for net in trusted)


@lru_cache(maxsize=4096)
def _is_trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    """For the peer: a handful of proxies, so cached."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return _in(ip, trusted)


def client_ip(peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """Walk X-Forwarded-For from the right, skipping trusted proxies: the first untrusted hop is
    the client. Anything left of it was written by the client and is not believed."""
    ip = peer or "unknown"
    if not forwarded_for or not trusted or not _is_trusted(ip, trusted):
        return ip
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        try:
            parsed = ipaddress.ip_address(hop)  # client addresses: parsed once each, not cached
        except ValueError:
            return ip  # a malformed hop: stop at the last address we could vouch for
        ip = hop
        if not _in(parsed, trusted):
            return hop
    return ip

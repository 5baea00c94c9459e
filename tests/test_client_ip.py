import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otp_service.logs import mask_subnet
from otp_service.net import Client, Prefixes, resolve


def identify(address: str, prefixes: Prefixes) -> Client:
    """A request straight from `address`, no proxy."""
    return resolve(address, None, (), prefixes)


TRUSTED = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")]


@pytest.mark.parametrize(
    ("peer", "xff", "trusted", "expected"),
    [
        ("203.0.113.5", None, TRUSTED, "203.0.113.5"),
        ("203.0.113.5", "1.2.3.4", TRUSTED, "203.0.113.5"),  # untrusted peer: header ignored
        ("10.0.0.2", "198.51.100.7", TRUSTED, "198.51.100.7"),
        ("10.0.0.2", "6.6.6.6, 198.51.100.7", TRUSTED, "198.51.100.7"),  # spoofed left part ignored
        ("10.0.0.2", "198.51.100.7, 10.0.0.9", TRUSTED, "198.51.100.7"),  # chain of proxies
        ("10.0.0.2", "10.0.0.8, 10.0.0.9", TRUSTED, "10.0.0.8"),  # all trusted: leftmost
        ("10.0.0.2", "garbage", TRUSTED, "10.0.0.2"),
        ("10.0.0.2", "198.51.100.7", [], "10.0.0.2"),  # nothing trusted
        ("::1", "2001:db8::1", TRUSTED, "2001:db8::1"),
    ],
)
def test_client_ip(peer: str, xff: str | None, trusted: list[ipaddress.IPv4Network], expected: str) -> None:
    assert resolve(peer, xff, tuple(trusted), Prefixes()) == identify(expected, Prefixes())
    assert resolve(peer, xff, tuple(trusted), Prefixes()).ip == expected


def test_every_forwarded_line_joined_keeps_the_proxy_hop() -> None:
    # What RequestContext passes: the header lines joined with commas, in order.
    assert resolve("10.0.0.2", "6.6.6.6,198.51.100.7", tuple(TRUSTED), Prefixes()).ip == "198.51.100.7"


@pytest.mark.parametrize(
    ("address", "key", "subnet"),
    [
        ("198.51.100.23", "198.51.100.23", "198.51.100.0/24"),
        ("::ffff:198.51.100.23", "198.51.100.23", "198.51.100.0/24"),
        ("2001:db8:a:b:c:d:e:f", "2001:db8:a:b::/64", "2001:db8:a::/48"),
        ("2001:DB8:A:B::1", "2001:db8:a:b::/64", "2001:db8:a::/48"),
        ("testclient", "testclient", "testclient"),
    ],
)
def test_a_client_is_an_ipv4_address_or_an_ipv6_64(address: str, key: str, subnet: str) -> None:
    client = identify(address, Prefixes())
    assert (client.key, client.subnet) == (key, subnet)


def test_prefixes_are_settings() -> None:
    client = identify("2001:db8:a:b:c:d:e:f", Prefixes(ipv6_client=56, ipv4_subnet=16, ipv6_subnet=32))
    assert (client.key, client.subnet) == ("2001:db8:a::/56", "2001:db8::/32")
    assert identify("198.51.100.23", Prefixes(ipv4_subnet=16)).subnet == "198.51.0.0/16"


def test_mask_subnet() -> None:
    assert mask_subnet("203.0.113.0/24") == "203.0.x.0/24"
    assert mask_subnet("2001:db8:42::/48") == "2001:db8:x::/48"


@given(st.ip_addresses())
def test_identify_agrees_with_ipaddress(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    """inet_pton arithmetic (the fast way) against the standard library's networks."""
    client = identify(str(address), Prefixes())
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        assert client.key == str(address)
        assert client.subnet == str(ipaddress.ip_network(f"{address}/24", strict=False))
    else:
        assert client.key == str(ipaddress.ip_network(f"{address}/64", strict=False))
        assert client.subnet == str(ipaddress.ip_network(f"{address}/48", strict=False))


def test_a_unix_socket_peer_is_the_local_proxy_when_proxies_are_trusted() -> None:
    # No peer address: `serve --uds`, behind a local proxy.
    assert resolve(None, "198.51.100.7", tuple(TRUSTED), Prefixes()).ip == "198.51.100.7"
    assert resolve(None, "6.6.6.6, 198.51.100.7", tuple(TRUSTED), Prefixes()).ip == "198.51.100.7"
    assert resolve(None, "198.51.100.7", (), Prefixes()).ip == "unknown"  # nothing trusted: not believed

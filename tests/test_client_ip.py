import ipaddress

import pytest

from otp_service.net import client_ip

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
    assert client_ip(peer, xff, tuple(trusted)) == expected

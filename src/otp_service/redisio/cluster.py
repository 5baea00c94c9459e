"""Redis Cluster: which slot a key hashes to, and which node owns a slot.

Every key of the service shares one hash tag (keys.RedisKeys), so one node owns all of them; the
client asks the node it was given which node that is (CLUSTER SLOTS) and talks to that one."""

from typing import Any


def _crc16(data: bytes) -> int:
    """CRC16-XMODEM, Redis Cluster's key hash (cluster spec, "Keys distribution model")."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(key: str) -> int:
    raw = key.encode()
    start = raw.find(b"{")
    if start != -1:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return _crc16(raw) % 16384


def slot_owner(slots: list[Any], slot: int, default_host: str) -> tuple[str, int] | None:
    """The primary serving `slot` in a CLUSTER SLOTS reply (an empty host means the node asked)."""
    for entry in slots:
        start, end, primary = entry[0], entry[1], entry[2]
        if start <= slot <= end:
            host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
            return host or default_host, int(primary[1])
    return None


def redirection(error: str) -> tuple[str, tuple[str, int]] | None:
    """("MOVED" or "ASK", the node) for a `MOVED|ASK <slot> <host>:<port>` error reply; None for
    any other reply. MOVED: the slot lives there now. ASK: this one command goes there, after
    ASKING (the slot is migrating and the key has left)."""
    kind, _, rest = error.partition(" ")
    if kind not in ("MOVED", "ASK"):
        return None
    host, _, port = rest.split()[1].rpartition(":")
    return kind, (host, int(port))

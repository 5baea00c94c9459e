"""Opaque cursors for keyset pagination (newest first, on a row id), one format for every list
of the admin API; the prefix names the list, so one list's cursor is refused by another."""

import base64
import binascii

from otp_service.errors import InvalidRequest


def encode_cursor(last_id: int, kind: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = raw.partition(":")
        if prefix != kind:
            raise ValueError(cursor)
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("cursor: not a cursor this service issued") from None

"""Opaque cursors for keyset pagination (newest first, on a row id), one format for every list
of the admin API; the prefix names the list, so one list's cursor is refused by another."""

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from otp_service.errors import InvalidRequest

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None  # null at the end


def page_of(rows: Sequence[T], limit: int, kind: str, row_id: Callable[[T], int]) -> Page[T]:
    """A page from `limit + 1` rows fetched newest first: the extra row only says there is more."""
    items = list(rows[:limit])
    more = len(rows) > limit and bool(items)
    return Page(items, encode_cursor(row_id(items[-1]), kind) if more else None)


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

""" "Why didn't my user get the code?": an address's deliveries (of every application, or of one),
newest first, each with the provider events matched to it by the provider's message id
(delivered, delayed, bounced, complained, …)."""

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from otp_service.db.engine import database_session
from otp_service.db.models import Delivery
from otp_service.delivery import repository as deliveries
from otp_service.errors import NotFound
from otp_service.keyset import Page, decode_cursor, page_of
from otp_service.webhooks import repository as events
from otp_service.webhooks.events import kind_of


@dataclass(frozen=True, slots=True)
class MatchedEvent:
    kind: str  # delivered | delayed | bounced | complained | sent | suppressed | rejected | failed | …
    type: str  # the provider's own event type
    provider: str
    event_id: str
    occurred_at: datetime | None
    received_at: datetime
    suppressed: bool  # the event suppressed the address (a permanent bounce, a complaint)


@dataclass(frozen=True, slots=True)
class DeliveryView:
    record: Delivery
    events: list[MatchedEvent]


class DeliveryLookup:
    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], apps: Collection[str] = ("",)) -> None:
        self._sessions = sessions
        self._apps = apps

    async def list(
        self, email: str, *, limit: int, cursor: str | None, app: str | None = None
    ) -> Page[DeliveryView]:
        """`app`: one application's deliveries only (one of `apps`, '' the service-wide
        application, else NotFound); None: every application's."""
        if app is not None and app not in self._apps:
            raise NotFound("No such application")
        before = decode_cursor(cursor, "d") if cursor else None
        async with database_session(self._sessions, "deliveries.lookup") as session:
            rows = await deliveries.page_for(session, email, before_id=before, limit=limit + 1, app=app)
            page = page_of(rows, limit, "d", lambda r: r.id)
            ids = [r.provider_message_id for r in page.items if r.provider_message_id]
            matched = await events.for_messages(session, ids)
        by_message: dict[tuple[str, str], list[MatchedEvent]] = {}
        for e in matched:
            if e.message_id is None:
                continue
            by_message.setdefault((e.provider, e.message_id), []).append(
                MatchedEvent(
                    kind_of(e.provider, e.event_type),
                    e.event_type,
                    e.provider,
                    e.event_id,
                    e.occurred_at,
                    e.received_at,
                    e.outcome == "suppressed",
                )
            )
        items = [
            DeliveryView(r, by_message.get((r.provider or "", r.provider_message_id or ""), []))
            for r in page.items
        ]
        return Page(items, page.next_cursor)

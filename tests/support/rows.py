"""Reading back what the fleet committed, for tests that watch it from outside."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from schemas.tables import DeadLetter, InboxStatus, WebhookEvent
from tests.support.stripe_fixtures import body_of


def dead_letters(engine: Engine, **where: Any) -> list[DeadLetter]:
    """Dead letters whose columns equal `where`, oldest first."""
    with Session(engine) as session:
        query = select(DeadLetter).order_by(DeadLetter.id)
        for column, value in where.items():
            query = query.where(getattr(DeadLetter, column) == value)
        return list(session.scalars(query))


def stored_enqueued(engine: Engine, events: list[dict[str, Any]]) -> list[int]:
    """Stripe events committed to the inbox as the relay leaves them (`enqueued`), in order."""
    with Session(engine) as session, session.begin():
        rows = [
            WebhookEvent(
                provider="stripe",
                event_id=event["id"],
                event_type=event["type"],
                body=body_of(event),
                status=InboxStatus.ENQUEUED,
            )
            for event in events
        ]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]

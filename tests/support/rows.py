"""Reading back what the fleet committed, for tests that watch it from outside."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from schemas.tables import DeadLetter, InboxStatus, WebhookEvent, utcnow
from tests.support.stripe_fixtures import body_of


def dead_letters(engine: Engine, **where: Any) -> list[DeadLetter]:
    """Dead letters whose columns equal `where`, oldest first."""
    with Session(engine) as session:
        query = select(DeadLetter).order_by(DeadLetter.id)
        for column, value in where.items():
            query = query.where(getattr(DeadLetter, column) == value)
        return list(session.scalars(query))


def stored(
    engine: Engine,
    events: list[dict[str, Any]],
    *,
    status: str = InboxStatus.ENQUEUED,
    received_at: datetime | None = None,
) -> list[int]:
    """Stripe events committed to the inbox, in order: by default as the relay leaves them."""
    with Session(engine) as session, session.begin():
        rows = [
            WebhookEvent(
                provider="stripe",
                event_id=event["id"],
                event_type=event["type"],
                body=body_of(event),
                status=status,
                received_at=received_at or utcnow(),
            )
            for event in events
        ]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]

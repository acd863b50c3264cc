"""Reading and advancing inbox rows from tasks; status only ever moves forward."""

from __future__ import annotations

import structlog
from sqlalchemy import update
from sqlalchemy.orm import Session

from schemas.tables import InboxStatus, WebhookEvent, utcnow

DONE = frozenset({InboxStatus.PROCESSED, InboxStatus.IGNORED})


class InboxRowMissingError(LookupError):
    """A task names an inbox row that does not exist: permanent, retrying cannot help."""


def get(session: Session, inbox_id: int) -> WebhookEvent:
    row = session.get(WebhookEvent, inbox_id)
    if row is None:
        raise InboxRowMissingError(f"webhook_events row {inbox_id} does not exist")
    # Every later log line of this task names the event it works for.
    structlog.contextvars.bind_contextvars(
        inbox_id=inbox_id, provider=row.provider, event_id=row.event_id
    )
    return row


def mark_processed(session: Session, inbox_id: int) -> None:
    session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == inbox_id)
        .values(status=InboxStatus.PROCESSED, processed_at=utcnow(), last_error=None)
    )

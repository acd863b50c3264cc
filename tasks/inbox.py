"""Reading and advancing inbox rows from tasks; status only ever moves forward."""

from __future__ import annotations

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from schemas.tables import Effect, InboxStatus, WebhookEvent, utcnow
from workers.effects import handled_key, mark_handled

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


def finish(session: Session, inbox_id: int, task_name: str) -> None:
    """Record that one handler finished; the event is processed when all its handlers have."""
    row = session.get(WebhookEvent, inbox_id, with_for_update=True)  # serialises sibling handlers
    if row is None:
        raise InboxRowMissingError(f"webhook_events row {inbox_id} does not exist")
    if mark_handled(session, inbox_id, task_name) >= row.handler_count:
        session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == inbox_id)
            .values(status=InboxStatus.PROCESSED, processed_at=utcnow(), last_error=None)
        )


def finished_handlers(session: Session, inbox_id: int) -> set[str]:
    prefix = handled_key(inbox_id, "")
    # By inbox_id first (indexed): a LIKE prefix cannot use the key's index under most collations.
    keys = session.scalars(
        select(Effect.key).where(Effect.inbox_id == inbox_id, Effect.key.startswith(prefix))
    )
    return {key.removeprefix(prefix) for key in keys}

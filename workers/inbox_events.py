"""Stored webhooks for operators: list, show, and replay (process again after a bug is fixed)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from schemas.db import session_scope
from schemas.tables import InboxStatus, WebhookEvent, utcnow
from workers.audit import audit
from workers.effects import forget_handled


class InboxEventNotFoundError(LookupError):
    pass


def query(
    session: Session,
    *,
    provider: str | None = None,
    status: str | None = None,
    event_type: str | None = None,
    since: datetime | None = None,
    limit: int | None = 200,
) -> list[WebhookEvent]:
    statement = select(WebhookEvent).order_by(WebhookEvent.id.desc())
    if provider:
        statement = statement.where(WebhookEvent.provider == provider)
    if status:
        statement = statement.where(WebhookEvent.status == status)
    if event_type:
        statement = statement.where(WebhookEvent.event_type == event_type)
    if since:
        statement = statement.where(WebhookEvent.received_at >= since)
    if limit:
        statement = statement.limit(limit)
    return list(session.scalars(statement))


def get(session: Session, inbox_id: int, *, lock: bool = False) -> WebhookEvent:
    statement = select(WebhookEvent).where(WebhookEvent.id == inbox_id)
    row = session.scalar(statement.with_for_update() if lock else statement)
    if row is None:
        raise InboxEventNotFoundError(f"inbox event {inbox_id} does not exist")
    return row


def replay(
    sessions: sessionmaker[Session], inbox_id: int, *, publish: Callable[[int], str], actor: str
) -> str:
    """Process the stored event again from the start; side effects already done stay done.

    The reset is committed before the publish (a worker must see it), already marked `enqueued` so
    the inbox sweep cannot send it a second time meanwhile; if the publish fails the row goes back
    to `received` and the sweep sends it on its next pass.
    """
    with session_scope(sessions) as session:
        row = get(session, inbox_id, lock=True)
        audit(
            session,
            actor=actor,
            action="inbox_event.replayed",
            entity_type="webhook_event",
            entity_id=inbox_id,
            inbox_id=inbox_id,
            previous_status=row.status,
        )
        forget_handled(session, inbox_id)
        row.status, row.enqueued_at, row.processed_at = InboxStatus.ENQUEUED, utcnow(), None
    try:
        task_id = publish(inbox_id)
    except Exception:
        with session_scope(sessions) as session:
            session.execute(
                update(WebhookEvent)
                .where(WebhookEvent.id == inbox_id, WebhookEvent.status == InboxStatus.ENQUEUED)
                .values(status=InboxStatus.RECEIVED, enqueued_at=None)
            )
        raise
    return task_id


def as_dict(row: WebhookEvent, *, full: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": row.id,
        "provider": row.provider,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "status": row.status,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "received_at": row.received_at.isoformat(),
        "enqueued_at": row.enqueued_at.isoformat() if row.enqueued_at else None,
        "processed_at": row.processed_at.isoformat() if row.processed_at else None,
    }
    if full:
        data["body"] = row.body.decode("utf-8", errors="replace")
        data["headers"] = row.headers
    return data

"""Fleet housekeeping run by beat: re-enqueue inbox rows the broker never received."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from schemas.db import session_scope
from schemas.tables import InboxStatus, WebhookEvent, utcnow
from workers import runtime
from workers.celery_app import app
from workers.enqueue import publish_process_event
from workers.logging import get_logger

log = get_logger(__name__)
# Older than this and still `received`: the gateway committed it while the broker was down.
STUCK_AFTER = timedelta(seconds=60)
SWEEP_BATCH = 500


def requeue_stuck(session: Session, publish: Callable[[int], object], now: datetime) -> int:
    """Publish inbox rows left `received` past STUCK_AFTER; safe to repeat, processing is idempotent."""
    stuck = session.scalars(
        select(WebhookEvent.id)
        .where(
            WebhookEvent.status == InboxStatus.RECEIVED,
            WebhookEvent.received_at < now - STUCK_AFTER,
        )
        .order_by(WebhookEvent.id)
        .limit(SWEEP_BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    for inbox_id in stuck:
        publish(inbox_id)
    if stuck:
        session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id.in_(stuck), WebhookEvent.status == InboxStatus.RECEIVED)
            .values(status=InboxStatus.ENQUEUED, enqueued_at=now)
        )
    return len(stuck)


@app.task(name="workers.maintenance.sweep_inbox")
def sweep_inbox() -> int:
    with session_scope(runtime.sessions()) as session:
        count = requeue_stuck(
            session, lambda inbox_id: publish_process_event(app, inbox_id), utcnow()
        )
    log.info("inbox.swept", requeued=count)
    return count

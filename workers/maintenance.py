"""Fleet housekeeping run by beat: re-enqueue inbox rows the broker never received."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

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


@app.task(name="workers.maintenance.sweep_inbox")
def sweep_inbox() -> int:
    """Safe to run any number of times: processing an inbox row is idempotent."""
    cutoff = utcnow() - STUCK_AFTER
    with session_scope(runtime.sessions()) as session:
        stuck = session.scalars(
            select(WebhookEvent.id)
            .where(WebhookEvent.status == InboxStatus.RECEIVED, WebhookEvent.received_at < cutoff)
            .order_by(WebhookEvent.id)
            .limit(SWEEP_BATCH)
            .with_for_update(skip_locked=True)
        ).all()
        for inbox_id in stuck:
            publish_process_event(app, inbox_id)
        if stuck:
            session.execute(
                update(WebhookEvent)
                .where(WebhookEvent.id.in_(stuck), WebhookEvent.status == InboxStatus.RECEIVED)
                .values(status=InboxStatus.ENQUEUED, enqueued_at=utcnow())
            )
    log.info("inbox.swept", requeued=len(stuck))
    return len(stuck)

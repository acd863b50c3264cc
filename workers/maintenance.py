"""Fleet housekeeping run by beat: re-enqueue inbox rows the broker never received."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from schemas.db import session_scope
from schemas.tables import InboxStatus, WebhookEvent, utcnow
from workers import runtime
from workers.celery_app import app
from workers.enqueue import publish_process_event
from workers.logging import get_logger

log = get_logger(__name__)
SWEEP_BATCH = 500


def requeue_stuck(
    session: Session,
    publish: Callable[[int], object],
    now: datetime,
    *,
    received_after: timedelta,
    enqueued_after: timedelta,
) -> int:
    """Publish inbox rows the broker never got or lost; safe to repeat, processing is idempotent.

    `received` past `received_after`: stored while the broker was down. `enqueued`/`dispatched`
    past the longer `enqueued_after`: the message was lost with a broker that keeps nothing on disk.
    """
    never_published = (WebhookEvent.status == InboxStatus.RECEIVED) & (
        WebhookEvent.received_at < now - received_after
    )
    lost = WebhookEvent.status.in_([InboxStatus.ENQUEUED, InboxStatus.DISPATCHED]) & (
        func.coalesce(WebhookEvent.enqueued_at, WebhookEvent.received_at) < now - enqueued_after
    )
    stuck = session.execute(
        select(WebhookEvent.id, WebhookEvent.status)
        .where(never_published | lost)
        .order_by(WebhookEvent.id)
        .limit(SWEEP_BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    for inbox_id, _ in stuck:
        publish(inbox_id)
    for inbox_id, status in stuck:
        new_status = InboxStatus.ENQUEUED if status == InboxStatus.RECEIVED else status
        session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == inbox_id)
            .values(status=new_status, enqueued_at=now)
        )
    return len(stuck)


@app.task(name="workers.maintenance.sweep_inbox", soft_time_limit=50, time_limit=55)
def sweep_inbox() -> int:
    settings = runtime.settings()
    with session_scope(runtime.sessions()) as session:
        count = requeue_stuck(
            session,
            lambda inbox_id: publish_process_event(app, inbox_id),
            utcnow(),
            received_after=timedelta(seconds=settings.inbox_received_stale_seconds),
            enqueued_after=timedelta(seconds=settings.inbox_enqueued_stale_seconds),
        )
    log.info("inbox.swept", requeued=count)
    return count

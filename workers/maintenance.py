"""Fleet housekeeping run by beat: re-enqueue inbox rows the broker never received."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from schemas.db import session_scope
from schemas.tables import InboxStatus, WebhookEvent, utcnow
from workers import runtime
from workers.celery_app import app
from workers.enqueue import publish_process_events
from workers.logging import get_logger
from workers.queues import BACKLOG_QUEUE

log = get_logger(__name__)
SWEEP_BATCH = 500
# A sweep publishes rows the broker never got batch after batch for this long (the task's soft
# limit is 50 s): after an outage of ten minutes at 300 webhooks/s, 180,000 rows wait for it, which
# at one batch a minute took five hours.
SWEEP_SECONDS = 30.0

# Publishes process_events for the ids; returns those the broker took.
PublishBatch = Callable[[Sequence[int]], Sequence[int]]


def requeue_stuck(
    session: Session,
    publish: PublishBatch,
    now: datetime,
    *,
    received_after: timedelta,
    enqueued_after: timedelta | None,
) -> int:
    """Publish one batch of inbox rows the broker never got or lost; safe to repeat, processing is
    idempotent. Returns how many the broker took.

    `received` past `received_after`: stored while the broker was down. `enqueued`/`dispatched`
    past the longer `enqueued_after` (None: not these): the message was lost with a broker that
    keeps nothing on disk.
    """
    stuck_rows = (WebhookEvent.status == InboxStatus.RECEIVED) & (
        WebhookEvent.received_at < now - received_after
    )
    if enqueued_after is not None:
        stuck_rows |= WebhookEvent.status.in_([InboxStatus.ENQUEUED, InboxStatus.DISPATCHED]) & (
            func.coalesce(WebhookEvent.enqueued_at, WebhookEvent.received_at) < now - enqueued_after
        )
    stuck = session.scalars(
        select(WebhookEvent.id)
        .where(stuck_rows)
        # Oldest first, in the order of the (status, received_at) index. Ordered by id, each batch
        # sorted every row still waiting: 200,000 rows took 6,300 a second and missed the 30 s
        # budget, in this order 8,100 a second (12,000 for 100,000 rows).
        .order_by(WebhookEvent.received_at, WebhookEvent.id)
        .limit(SWEEP_BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    if not stuck:
        return 0
    published = list(publish(stuck))
    if not published:  # the broker is still away: the rows wait for the next sweep
        log.warning("inbox.sweep_unpublished", count=len(stuck))
    else:
        session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id.in_(published))
            .values(
                status=case(
                    (WebhookEvent.status == InboxStatus.RECEIVED, InboxStatus.ENQUEUED),
                    else_=WebhookEvent.status,
                ),
                enqueued_at=now,
            )
        )
    return len(published)


def sweep(
    transaction: Callable[[], AbstractContextManager[Session]],
    publish: PublishBatch,
    now: datetime,
    *,
    received_after: timedelta,
    enqueued_after: timedelta,
    seconds: float = SWEEP_SECONDS,
) -> int:
    """One batch of both kinds, then more batches of rows never published while full batches come
    back and `seconds` last. Lost rows are left at one batch a sweep: when the workers are more
    than `enqueued_after` behind, every row still queued looks lost, and publishing all of them
    again at each sweep would pile copies onto the very backlog."""
    deadline = time.monotonic() + seconds
    lost_after: timedelta | None = enqueued_after
    total = 0
    while True:
        with transaction() as session:
            count = requeue_stuck(
                session, publish, now, received_after=received_after, enqueued_after=lost_after
            )
        total += count
        lost_after = None
        if count < SWEEP_BATCH or time.monotonic() >= deadline:
            return total


@app.task(name="workers.maintenance.sweep_inbox", soft_time_limit=50, time_limit=55)
def sweep_inbox() -> int:
    settings = runtime.settings()
    count = sweep(
        lambda: session_scope(runtime.sessions()),
        lambda inbox_ids: publish_process_events(app, inbox_ids, queue=BACKLOG_QUEUE),
        utcnow(),
        received_after=timedelta(seconds=settings.inbox_received_stale_seconds),
        enqueued_after=timedelta(seconds=settings.inbox_enqueued_stale_seconds),
    )
    log.info("inbox.swept", requeued=count)
    return count

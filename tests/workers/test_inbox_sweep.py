"""The inbox sweep publishes what the broker never got, and only that."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from schemas.tables import InboxStatus, WebhookEvent
from workers.maintenance import requeue_stuck

STUCK_AFTER = timedelta(seconds=60)
LOST_AFTER = timedelta(minutes=15)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _row(session: Session, status: str, age: timedelta) -> WebhookEvent:
    row = WebhookEvent(
        provider="stripe",
        event_id=f"evt_T{secrets.token_hex(8)}",
        event_type="invoice.paid",
        body=b"{}",
        status=status,
        received_at=NOW - age,
    )
    session.add(row)
    session.flush()
    return row


def test_sweep_publishes_rows_left_received_too_long_and_marks_them_enqueued(
    db_session: Session,
) -> None:
    stuck = _row(db_session, InboxStatus.RECEIVED, STUCK_AFTER + timedelta(seconds=5))
    fresh = _row(db_session, InboxStatus.RECEIVED, timedelta(seconds=5))
    enqueued = _row(db_session, InboxStatus.ENQUEUED, timedelta(minutes=5))
    published: list[int] = []

    count = requeue_stuck(
        db_session, published.append, NOW, received_after=STUCK_AFTER, enqueued_after=LOST_AFTER
    )

    assert stuck.id in published
    assert fresh.id not in published
    assert enqueued.id not in published
    assert count == len(published)
    db_session.refresh(stuck)
    assert (stuck.status, stuck.enqueued_at) == (InboxStatus.ENQUEUED, NOW)


def test_second_sweep_publishes_nothing_again(db_session: Session) -> None:
    _row(db_session, InboxStatus.RECEIVED, STUCK_AFTER * 3)
    first: list[int] = []
    requeue_stuck(
        db_session, first.append, NOW, received_after=STUCK_AFTER, enqueued_after=LOST_AFTER
    )
    second: list[int] = []

    requeue_stuck(
        db_session, second.append, NOW, received_after=STUCK_AFTER, enqueued_after=LOST_AFTER
    )

    assert first
    assert second == []


def test_sweep_republishes_rows_whose_message_was_lost_after_the_longer_age(
    db_session: Session,
) -> None:
    lost = _row(db_session, InboxStatus.DISPATCHED, LOST_AFTER * 2)
    lost.enqueued_at = NOW - LOST_AFTER * 2
    recent = _row(db_session, InboxStatus.ENQUEUED, LOST_AFTER * 2)
    recent.enqueued_at = NOW - LOST_AFTER / 2
    db_session.flush()
    published: list[int] = []

    requeue_stuck(
        db_session, published.append, NOW, received_after=STUCK_AFTER, enqueued_after=LOST_AFTER
    )

    assert lost.id in published
    assert recent.id not in published
    db_session.refresh(lost)
    assert (lost.status, lost.enqueued_at) == (InboxStatus.DISPATCHED, NOW)

"""The inbox sweep publishes what the broker never got, and only that."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from schemas.tables import InboxStatus, WebhookEvent
from workers.maintenance import STUCK_AFTER, requeue_stuck

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
    enqueued = _row(db_session, InboxStatus.ENQUEUED, timedelta(hours=1))
    published: list[int] = []

    count = requeue_stuck(db_session, published.append, NOW)

    assert stuck.id in published
    assert fresh.id not in published
    assert enqueued.id not in published
    assert count == len(published)
    db_session.refresh(stuck)
    assert (stuck.status, stuck.enqueued_at) == (InboxStatus.ENQUEUED, NOW)


def test_second_sweep_publishes_nothing_again(db_session: Session) -> None:
    _row(db_session, InboxStatus.RECEIVED, STUCK_AFTER * 3)
    first: list[int] = []
    requeue_stuck(db_session, first.append, NOW)
    second: list[int] = []

    requeue_stuck(db_session, second.append, NOW)

    assert first
    assert second == []

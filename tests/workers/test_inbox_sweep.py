"""The inbox sweep publishes what the broker never got, and only that; a backlog in one sweep."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from schemas.tables import InboxStatus, WebhookEvent
from tests.support.broker import taking
from workers import maintenance
from workers.maintenance import requeue_stuck, sweep

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
        db_session, taking(published), NOW, received_after=STUCK_AFTER, enqueued_after=LOST_AFTER
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
        db_session, taking(first), NOW, received_after=STUCK_AFTER, enqueued_after=LOST_AFTER
    )
    second: list[int] = []

    requeue_stuck(
        db_session, taking(second), NOW, received_after=STUCK_AFTER, enqueued_after=LOST_AFTER
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
        db_session, taking(published), NOW, received_after=STUCK_AFTER, enqueued_after=LOST_AFTER
    )

    assert lost.id in published
    assert recent.id not in published
    db_session.refresh(lost)
    assert (lost.status, lost.enqueued_at) == (InboxStatus.DISPATCHED, NOW)


def test_rows_the_broker_does_not_take_stay_received_for_the_next_sweep(
    db_session: Session,
) -> None:
    stuck = _row(db_session, InboxStatus.RECEIVED, STUCK_AFTER * 2)

    count = requeue_stuck(
        db_session, taking([], up=False), NOW, received_after=STUCK_AFTER, enqueued_after=LOST_AFTER
    )

    assert count == 0
    db_session.refresh(stuck)
    assert (stuck.status, stuck.enqueued_at) == (InboxStatus.RECEIVED, None)


def _sweep(session: Session, publish: maintenance.PublishBatch, seconds: float = 30) -> int:
    return sweep(
        lambda: contextlib.nullcontext(session),
        publish,
        NOW,
        received_after=STUCK_AFTER,
        enqueued_after=LOST_AFTER,
        seconds=seconds,
    )


def test_one_sweep_publishes_a_backlog_of_received_rows_batch_after_batch(
    db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(maintenance, "SWEEP_BATCH", 3)
    backlog = [_row(db_session, InboxStatus.RECEIVED, STUCK_AFTER * 2).id for _ in range(8)]
    batches: list[list[int]] = []

    def publish(inbox_ids: Sequence[int]) -> list[int]:
        batches.append(list(inbox_ids))
        return list(inbox_ids)

    assert _sweep(db_session, publish) == 8
    assert batches == [backlog[0:3], backlog[3:6], backlog[6:8]]


def test_lost_rows_are_published_again_one_batch_a_sweep(
    db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(maintenance, "SWEEP_BATCH", 3)
    lost = [_row(db_session, InboxStatus.ENQUEUED, LOST_AFTER * 2).id for _ in range(5)]
    received = [_row(db_session, InboxStatus.RECEIVED, STUCK_AFTER * 2).id for _ in range(4)]
    published: list[int] = []

    assert _sweep(db_session, taking(published)) == 3 + 4
    assert published == lost[:3] + received[:3] + received[3:]


def test_a_sweep_stops_at_its_time_budget(
    db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(maintenance, "SWEEP_BATCH", 2)
    backlog = [_row(db_session, InboxStatus.RECEIVED, STUCK_AFTER * 2).id for _ in range(6)]
    published: list[int] = []

    assert _sweep(db_session, taking(published), seconds=0) == 2
    assert published == backlog[:2]


def test_a_sweep_stops_when_the_broker_takes_nothing(
    db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(maintenance, "SWEEP_BATCH", 2)
    for _ in range(6):
        _row(db_session, InboxStatus.RECEIVED, STUCK_AFTER * 2)
    calls: list[int] = []

    def down(inbox_ids: Sequence[int]) -> list[int]:
        calls.append(len(inbox_ids))
        return []

    assert _sweep(db_session, down) == 0
    assert calls == [2]

"""The deactivation sweep ends memberships whose paid period is over, and only those."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas.tables import AuditEntry, Member, Membership
from tasks.lifecycle import end_due_memberships

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _membership(session: Session, status: str, deactivate_at: datetime | None) -> Membership:
    member = Member(email=f"m-{secrets.token_hex(4)}@example.com", visible=True)
    session.add(member)
    session.flush()
    membership = Membership(member_id=member.id, status=status, deactivate_at=deactivate_at)
    session.add(membership)
    session.flush()
    return membership


def test_due_cancellation_ends_the_membership_hides_the_member_and_is_audited(
    db_session: Session,
) -> None:
    due = _membership(db_session, "cancel_scheduled", NOW - timedelta(minutes=1))

    member_ids = end_due_memberships(db_session, NOW)

    assert due.member_id in member_ids
    assert (due.status, due.ended_at) == ("canceled", NOW - timedelta(minutes=1))
    assert db_session.get(Member, due.member_id).visible is False  # type: ignore[union-attr]
    audited = db_session.scalars(
        select(AuditEntry.action).where(AuditEntry.entity_id == str(due.id))
    ).all()
    assert "membership.deactivated" in audited


def test_future_cancellations_and_other_statuses_are_left_alone(db_session: Session) -> None:
    later = _membership(db_session, "cancel_scheduled", NOW + timedelta(days=3))
    active = _membership(db_session, "active", NOW - timedelta(days=3))

    member_ids = end_due_memberships(db_session, NOW)

    assert later.member_id not in member_ids
    assert active.member_id not in member_ids
    assert (later.status, active.status) == ("cancel_scheduled", "active")

"""Clerk users become members: linked by email, email changes applied in order, deletion anonymises."""

from __future__ import annotations

import secrets
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from schemas.clerk_events import ClerkUser
from schemas.tables import AuditEntry, Member, WebhookEvent
from tasks.lifecycle import anonymise_member, link_clerk_user, update_clerk_user
from tests.support.processes import wait_until
from workers.sandbox.clerk_webhooks import build_user_event, clerk_user_id, encode

AT = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _user(user_id: str, email: str, first: str = "Ada") -> ClerkUser:
    return ClerkUser.model_validate(
        build_user_event("user.updated", user_id=user_id, email=email, first_name=first)["data"]
    )


def _inbox(session: Session) -> int:
    row = WebhookEvent(
        provider="clerk",
        event_id=f"msg_{secrets.token_hex(8)}",
        event_type="user.created",
        body=b"{}",
    )
    session.add(row)
    session.flush()
    return row.id


def _email() -> str:
    return f"ada-{secrets.token_hex(4)}@example.com"


def _member(session: Session, user_id: str) -> Member:
    return session.scalars(select(Member).where(Member.clerk_user_id == user_id)).one()


def test_new_clerk_user_becomes_a_member_with_its_primary_email(db_session: Session) -> None:
    user_id, email = clerk_user_id(), _email()

    outcome = link_clerk_user(db_session, _user(user_id, email.upper()), AT, _inbox(db_session))

    member = _member(db_session, user_id)
    assert outcome == "applied"
    assert (member.email, member.name) == (email, "Ada Member")


def test_clerk_user_links_the_member_a_checkout_created_for_the_same_email(
    db_session: Session,
) -> None:
    email = _email()
    paid = Member(email=email, stripe_customer_id=f"cus_T{secrets.token_hex(6)}")
    db_session.add(paid)
    db_session.flush()
    user_id = clerk_user_id()

    link_clerk_user(db_session, _user(user_id, email), AT, _inbox(db_session))

    assert _member(db_session, user_id).id == paid.id


def test_sign_up_racing_a_checkout_for_its_email_links_the_member_the_checkout_made(
    pg_engine: Engine,
) -> None:
    email, user_id = _email(), clerk_user_id()
    outcome: list[str] = []
    with Session(pg_engine) as checkout, Session(pg_engine) as signup:
        checkout.add(Member(email=email, stripe_customer_id=f"cus_T{secrets.token_hex(6)}"))
        checkout.flush()  # the address is taken, not yet committed
        inbox_id = _inbox(signup)
        waiter = signup.scalar(text("SELECT pg_backend_pid()"))

        def link() -> None:
            outcome.append(link_clerk_user(signup, _user(user_id, email), AT, inbox_id))
            signup.commit()

        thread = threading.Thread(target=link)
        thread.start()
        wait_until(
            lambda: checkout.scalar(
                text("SELECT count(*) FROM pg_locks WHERE pid = :pid AND NOT granted"),
                {"pid": waiter},
            ),
            timeout=10,
            what="the sign-up's insert waiting on the checkout's row",
        )
        checkout.commit()
        thread.join(timeout=10)

    with Session(pg_engine) as session:
        linked = session.scalars(select(Member).where(Member.email == email)).all()
    assert outcome == ["applied"]
    assert [member.clerk_user_id for member in linked] == [user_id]


def test_new_primary_email_is_applied_and_an_older_update_is_stale(db_session: Session) -> None:
    user_id, first, second = clerk_user_id(), _email(), _email()
    link_clerk_user(db_session, _user(user_id, first), AT, _inbox(db_session))

    assert (
        update_clerk_user(
            db_session, _user(user_id, second), AT + timedelta(minutes=1), _inbox(db_session)
        )
        == "applied"
    )
    late = update_clerk_user(
        db_session, _user(user_id, first), AT + timedelta(seconds=30), _inbox(db_session)
    )

    assert late == "stale_event"
    assert _member(db_session, user_id).email == second


def test_email_taken_by_another_member_is_not_stolen(db_session: Session) -> None:
    user_id, mine, theirs = clerk_user_id(), _email(), _email()
    db_session.add(Member(email=theirs))
    link_clerk_user(db_session, _user(user_id, mine), AT, _inbox(db_session))
    inbox_id = _inbox(db_session)

    outcome = update_clerk_user(
        db_session, _user(user_id, theirs), AT + timedelta(minutes=1), inbox_id
    )

    assert outcome == "email_taken"
    assert _member(db_session, user_id).email == mine
    actions = db_session.scalars(select(AuditEntry.action).where(AuditEntry.inbox_id == inbox_id))
    assert list(actions) == ["member.email_conflict"]


def test_deleted_user_is_anonymised_for_good(db_session: Session) -> None:
    user_id, email = clerk_user_id(), _email()
    link_clerk_user(db_session, _user(user_id, email), AT, _inbox(db_session))

    assert (
        anonymise_member(
            db_session, _user(user_id, email), AT + timedelta(hours=1), _inbox(db_session)
        )
        == "applied"
    )
    later = update_clerk_user(
        db_session, _user(user_id, email), AT + timedelta(hours=2), _inbox(db_session)
    )

    member = _member(db_session, user_id)
    assert later == "stale_event"
    assert (member.email, member.name, member.visible) == (None, None, False)
    assert member.anonymised_at is not None


def test_deleted_event_parses_without_user_fields() -> None:
    deleted = build_user_event("user.deleted", user_id="user_x", email="x@example.com")

    assert ClerkUser.model_validate(deleted["data"]).primary_email is None
    assert encode(deleted).startswith(b'{"data":')

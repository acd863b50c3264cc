"""What a batch of sign-ups asks of PostgreSQL: each statement is a round trip, and on a small box
the round trips are most of a worker's CPU."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session

from schemas.tables import AuditEntry, Member, Membership
from tests.support.rows import stored
from tests.support.stripe_fixtures import StripeCustomer
from tests.tasks.conftest import run_batch


def locked_reads(statements: list[str], table: str) -> list[str]:
    return [s for s in statements if re.search(rf"FROM {table}\b(?s:.*)FOR UPDATE", s)]


@pytest.fixture
def statements(pg_engine: Engine) -> Iterator[list[str]]:
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    event.listen(pg_engine, "before_cursor_execute", record)
    yield sent
    event.remove(pg_engine, "before_cursor_execute", record)


def run_as_one_batch(
    pg_engine: Engine, statements: list[str], events: list[dict[str, Any]]
) -> list[int]:
    """The events stored, then run as one batch with only its own statements recorded."""
    ids = stored(pg_engine, events)
    statements.clear()
    assert run_batch(ids) == {"processed": len(ids), "sent_alone": 0}
    return ids


def checkouts(customers: list[StripeCustomer]) -> list[dict[str, Any]]:
    return [who.event("checkout.session.completed") for who in customers]


def test_a_batch_of_new_customers_locks_its_inbox_rows_at_once_and_reads_no_member_first(
    pg_engine: Engine, worker_runtime: None, statements: list[str]
) -> None:
    customers = [StripeCustomer.new() for _ in range(3)]
    run_as_one_batch(pg_engine, statements, checkouts(customers))

    assert len(locked_reads(statements, "webhook_events")) == 1
    assert sum(s.startswith("SELECT") and "FROM webhook_events" in s for s in statements) == 1
    assert [s for s in statements if re.search(r"FROM members\b", s)] == []
    with Session(pg_engine) as session:
        statuses = session.execute(
            select(Member.stripe_customer_id, Membership.status)
            .join(Membership, Membership.member_id == Member.id)
            .where(Member.stripe_customer_id.in_([who.customer for who in customers]))
        ).all()
    assert sorted(statuses) == sorted((who.customer, "active") for who in customers)


def test_a_checkout_for_a_known_customer_falls_back_to_the_locked_read(
    pg_engine: Engine, worker_runtime: None, statements: list[str]
) -> None:
    who = StripeCustomer.new()
    run_as_one_batch(pg_engine, statements, [who.event("customer.subscription.created")])

    run_as_one_batch(pg_engine, statements, checkouts([who]))

    # The customer's row, then (it has no email yet) any other member with the checkout's email.
    assert len(locked_reads(statements, "members")) == 2
    with Session(pg_engine) as session:
        members = session.scalars(select(Member).where(Member.stripe_customer_id == who.customer))
        assert [m.email for m in members] == [who.email]


def test_a_batchs_audit_rows_go_in_with_one_statement_each_at_its_decision_time(
    pg_engine: Engine, worker_runtime: None, statements: list[str]
) -> None:
    ids = run_as_one_batch(
        pg_engine, statements, checkouts([StripeCustomer.new() for _ in range(3)])
    )

    assert sum(s.startswith("INSERT INTO audit_log") for s in statements) == 1
    with Session(pg_engine) as session:
        rows = session.scalars(
            select(AuditEntry).where(AuditEntry.inbox_id.in_(ids)).order_by(AuditEntry.id)
        ).all()
    assert [(row.inbox_id, row.action) for row in rows] == [
        (inbox_id, "membership.status_changed") for inbox_id in ids
    ]
    assert [row.at for row in rows] == sorted({row.at for row in rows})  # one time per decision

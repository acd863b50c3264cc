"""Two process_events batches that lock the same members in opposite orders, on real PostgreSQL.

Batches are cut by arrival, so two workers can hold one customer each and then wait for the other's.
PostgreSQL breaks the deadlock by failing one transaction; that batch must roll back and run its
events one by one, so that both batches' events are applied, each once.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import structlog
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from schemas.tables import AuditEntry, InboxStatus, Member, Membership, WebhookEvent
from tasks import dispatch
from tasks.dispatch import DATABASE_STEPS
from tasks.lifecycle import RECORD_PAYMENT_FAILED
from tests.support.rows import stored
from tests.support.stripe_fixtures import StripeCustomer
from tests.tasks.conftest import run_batch

# Long enough for PostgreSQL's deadlock check (deadlock_timeout, 1 s by default) to have run.
BARRIER_SECONDS = 20
T0 = 1_800_000_000


def _each_pauses_after_its_first_event(monkeypatch: pytest.MonkeyPatch) -> threading.Barrier:
    """Each thread's first payment_failed step, with its member locked, waits for the other's."""
    barrier = threading.Barrier(2, timeout=BARRIER_SECONDS)
    paused = threading.local()
    step = DATABASE_STEPS[RECORD_PAYMENT_FAILED]

    def pausing(session: Session, inbox_id: int) -> tuple[str, str | None]:
        result = step(session, inbox_id)
        if not getattr(paused, "once", False):
            paused.once = True
            barrier.wait()
        return result

    monkeypatch.setitem(DATABASE_STEPS, RECORD_PAYMENT_FAILED, pausing)
    return barrier


def test_batches_deadlocked_on_shared_members_still_apply_every_event_once(
    monkeypatch: pytest.MonkeyPatch, pg_engine: Engine, worker_runtime: None
) -> None:
    x, y = StripeCustomer.new(), StripeCustomer.new()
    checkouts = [who.event("checkout.session.completed") for who in (x, y)]
    assert run_batch(stored(pg_engine, checkouts)) == {"processed": 2, "sent_alone": 0}
    failed = {who: who.event("invoice.payment_failed", created=T0) for who in (x, y)}
    failed_later = {who: who.event("invoice.payment_failed", created=T0 + 60) for who in (x, y)}
    # Arrival order: x then y in one batch, y then x in the next.
    first = stored(pg_engine, [failed[x], failed[y]])
    second = stored(pg_engine, [failed_later[y], failed_later[x]])
    barrier = _each_pauses_after_its_first_event(monkeypatch)
    # A logger first used inside the capture: the module's own may have been cached, in an earlier
    # test of this process, with a processor list that a later configure_logging replaced.
    monkeypatch.setattr(dispatch, "log", structlog.get_logger("tasks.dispatch"))

    with structlog.testing.capture_logs() as logs, ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(run_batch, [first, second]))

    assert not barrier.broken
    assert outcomes == [{"processed": 2, "sent_alone": 0}] * 2
    (rolled_back,) = [line for line in logs if line["event"] == "events.batch_rolled_back"]
    assert "deadlock detected" in rolled_back["error"]
    with Session(pg_engine) as session:
        statuses = session.scalars(
            select(WebhookEvent.status).where(WebhookEvent.id.in_(first + second))
        ).all()
        audited = session.scalars(
            select(AuditEntry.inbox_id).where(AuditEntry.inbox_id.in_(first + second))
        ).all()
        memberships = {
            customer: (status, last_event_id)
            for customer, status, last_event_id in session.execute(
                select(Member.stripe_customer_id, Membership.status, Membership.last_event_id)
                .join(Membership, Membership.member_id == Member.id)
                .where(Member.stripe_customer_id.in_([x.customer, y.customer]))
            )
        }
    assert statuses == [InboxStatus.PROCESSED] * 4
    assert sorted(inbox_id or 0 for inbox_id in audited) == sorted(first + second)
    # Whichever batch won, each member ends at its newer event.
    assert memberships == {who.customer: ("past_due", failed_later[who]["id"]) for who in (x, y)}

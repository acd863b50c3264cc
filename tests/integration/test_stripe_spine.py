"""The path of one Stripe event on real parts: HTTP gateway, PostgreSQL inbox, Redis, Celery worker."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from schemas.tables import AuditEntry, InboxStatus, Member, Membership, WebhookEvent
from tests.conftest import STRIPE_OLD_SECRET, STRIPE_SECRET
from tests.integration.conftest import Fleet
from tests.signing import sign_stripe
from tests.support.processes import hookfleet, wait_until
from tests.support.stripe_fixtures import StripeCustomer, body_of

pytestmark = pytest.mark.integration
T0 = 1_763_800_000


def _deliver(fleet: Fleet, event: dict[str, Any], secret: str = STRIPE_SECRET) -> httpx.Response:
    body = body_of(event)
    return fleet.post_stripe(body, sign_stripe(body, secret=secret, at=datetime.now(UTC)))


def _membership(engine: Engine, customer: str) -> Membership | None:
    with Session(engine) as session:
        return session.scalar(
            select(Membership)
            .join(Member, Member.id == Membership.member_id)
            .where(Member.stripe_customer_id == customer)
        )


def _inbox(engine: Engine, event_id: str) -> list[WebhookEvent]:
    with Session(engine) as session:
        return list(session.scalars(select(WebhookEvent).where(WebhookEvent.event_id == event_id)))


def _processed(engine: Engine, event_id: str) -> bool:
    rows = _inbox(engine, event_id)
    return bool(rows) and rows[0].status == InboxStatus.PROCESSED


def _deliver_processed(fleet: Fleet, engine: Engine, event: dict[str, Any]) -> None:
    """Deliver `event` and wait until the worker has processed it (events applied in this order)."""
    assert _deliver(fleet, event).status_code == 200
    wait_until(lambda: _processed(engine, event["id"]), what=f"{event['type']} processed")


def test_signed_checkout_becomes_active_membership(fleet: Fleet, pg_engine: Engine) -> None:
    who = StripeCustomer.new()
    event = who.event("checkout.session.completed", created=T0)

    response = _deliver(fleet, event)

    assert response.status_code == 200
    assert response.json()["status"] == "accepted"
    wait_until(lambda: _processed(pg_engine, event["id"]), what="checkout processed")
    membership = _membership(pg_engine, who.customer)
    assert membership is not None
    assert (membership.status, membership.tier) == ("active", "member")
    assert membership.stripe_subscription_id == who.subscription
    with pg_engine.connect() as connection:
        member = connection.execute(
            select(Member.email, Member.visible).where(Member.stripe_customer_id == who.customer)
        ).one()
    assert member == (who.email, True)
    row = _inbox(pg_engine, event["id"])[0]
    assert row.enqueued_at is not None
    assert row.processed_at is not None
    assert set(row.headers) == {"stripe-signature"}


def test_delivery_signed_with_rotated_secret_is_accepted(fleet: Fleet, pg_engine: Engine) -> None:
    event = StripeCustomer.new().event("checkout.session.completed", created=T0)

    response = _deliver(fleet, event, secret=STRIPE_OLD_SECRET)

    assert response.status_code == 200
    wait_until(lambda: _processed(pg_engine, event["id"]), what="processed")


def test_same_event_delivered_five_times_is_processed_once(fleet: Fleet, pg_engine: Engine) -> None:
    who = StripeCustomer.new()
    event = who.event("checkout.session.completed", created=T0)

    first = _deliver(fleet, event)
    with ThreadPoolExecutor(4) as pool:
        repeats = list(pool.map(lambda _: _deliver(fleet, event), range(4)))

    assert first.json()["status"] == "accepted"
    assert [r.json() for r in repeats] == [{"status": "duplicate"}] * 4
    wait_until(lambda: _processed(pg_engine, event["id"]), what="processed")
    assert len(_inbox(pg_engine, event["id"])) == 1
    with pg_engine.connect() as connection:
        applied = connection.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.detail["stripe_event_id"].as_string() == event["id"])
        )
    assert applied == 1


def test_bad_signature_is_refused_and_stores_nothing(fleet: Fleet, pg_engine: Engine) -> None:
    event = StripeCustomer.new().event("checkout.session.completed", created=T0)

    response = _deliver(fleet, event, secret="whsec_not_ours")

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_signature", "reason": "mismatch"}
    assert _inbox(pg_engine, event["id"]) == []


def test_late_subscription_updated_does_not_resurrect_deleted(
    fleet: Fleet, pg_engine: Engine
) -> None:
    who = StripeCustomer.new()
    created = who.event("customer.subscription.created", created=T0)
    deleted = who.event("customer.subscription.deleted", created=T0 + 100)
    late_update = who.event("customer.subscription.updated", created=T0 + 50)

    for event in (created, deleted, late_update):
        _deliver_processed(fleet, pg_engine, event)

    membership = _membership(pg_engine, who.customer)
    assert membership is not None
    assert membership.status == "canceled"
    with pg_engine.connect() as connection:
        skipped = connection.scalar(
            select(AuditEntry.action).where(
                AuditEntry.detail["stripe_event_id"].as_string() == late_update["id"]
            )
        )
    assert skipped == "membership.stale_event"


def test_payment_failure_then_paid_invoice_restores_active(fleet: Fleet, pg_engine: Engine) -> None:
    who = StripeCustomer.new()
    sequence = [
        who.event("checkout.session.completed", created=T0),
        who.event("invoice.payment_failed", created=T0 + 10),
        who.event("invoice.paid", created=T0 + 20),
    ]
    statuses = []
    for event in sequence:
        _deliver_processed(fleet, pg_engine, event)
        membership = _membership(pg_engine, who.customer)
        assert membership is not None
        statuses.append(membership.status)

    assert statuses == ["active", "past_due", "active"]


def test_hookfleet_send_makes_a_member_appear(fleet: Fleet, pg_engine: Engine) -> None:
    email = f"newcomer-{os.getpid()}@example.com"
    result = hookfleet(
        "send", "stripe", "checkout.session.completed", "--email", email,
        "--url", fleet.url, env=fleet.env,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    assert '"status":"accepted"' in result.stdout

    def member_active() -> bool:
        with pg_engine.connect() as connection:
            status = connection.scalar(
                select(Membership.status)
                .join(Member, Member.id == Membership.member_id)
                .where(Member.email == email)
            )
        return status == "active"

    wait_until(member_active, what="the sent member to be active")


def test_readyz_reports_database_and_broker(fleet: Fleet) -> None:
    response = httpx.get(f"{fleet.url}/readyz", timeout=10)

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": True, "broker": True}}


def test_logs_name_the_event_on_every_line_and_never_a_secret_or_the_body(
    fleet: Fleet, pg_engine: Engine
) -> None:
    who = StripeCustomer.new()
    event = who.event("checkout.session.completed", created=T0)
    _deliver_processed(fleet, pg_engine, event)
    inbox_id = _inbox(pg_engine, event["id"])[0].id

    for service in (fleet.gateway, fleet.worker):
        text = service.log_path.read_text()
        assert STRIPE_SECRET not in text
        assert STRIPE_OLD_SECRET not in text
        assert who.email not in text  # the body stays in the inbox, never in a log line
        lines = [json.loads(line) for line in text.splitlines() if event["id"] in line]
        assert lines, f"no {service.name} log line names {event['id']}"
        assert all(line.get("inbox_id") == inbox_id for line in lines), lines
    worker_lines = [
        json.loads(line)
        for line in fleet.worker.log_path.read_text().splitlines()
        if event["id"] in line
    ]
    assert all("task_id" in line for line in worker_lines)

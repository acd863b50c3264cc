"""Lifecycle handlers as plain functions against real PostgreSQL: idempotent, order-proof, audited."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas.settings import Settings
from schemas.stripe_events import StripeEvent
from schemas.tables import AuditEntry, Member, Membership, WebhookEvent
from tasks.lifecycle import (
    Handler,
    apply_checkout,
    apply_invoice_paid,
    apply_payment_failed,
    apply_subscription,
)
from tests.support.stripe_fixtures import StripeCustomer, body_of

T0 = 1_763_800_000
HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": apply_checkout,
    "customer.subscription.created": apply_subscription,
    "customer.subscription.updated": apply_subscription,
    "customer.subscription.deleted": apply_subscription,
    "invoice.paid": apply_invoice_paid,
    "invoice.payment_failed": apply_payment_failed,
}


def apply(session: Session, settings: Settings, event: dict[str, Any]) -> str:
    """Store the event in the inbox (audit rows point at it) and run its handler."""
    row = WebhookEvent(
        provider="stripe", event_id=event["id"], event_type=event["type"], body=body_of(event)
    )
    session.add(row)
    session.flush()
    parsed = StripeEvent.model_validate(event)
    return HANDLERS[event["type"]](session, parsed, row.id, settings)


def membership_of(session: Session, who: StripeCustomer) -> Membership:
    return session.scalars(
        select(Membership)
        .join(Member, Member.id == Membership.member_id)
        .where(Member.stripe_customer_id == who.customer)
    ).one()


def member_of(session: Session, who: StripeCustomer) -> Member:
    return session.scalars(select(Member).where(Member.stripe_customer_id == who.customer)).one()


def actions(session: Session, event: dict[str, Any]) -> list[str]:
    return list(
        session.scalars(
            select(AuditEntry.action).where(
                AuditEntry.detail["stripe_event_id"].as_string() == event["id"]
            )
        )
    )


@pytest.fixture
def who() -> StripeCustomer:
    return StripeCustomer.new()


def test_paid_checkout_creates_a_visible_active_member_with_its_tier(
    db_session: Session, pg_settings: Settings, who: StripeCustomer
) -> None:
    event = who.event("checkout.session.completed", created=T0)

    assert apply(db_session, pg_settings, event) == "applied"

    membership = membership_of(db_session, who)
    member = member_of(db_session, who)
    assert (membership.status, membership.tier) == ("active", "member")
    assert membership.stripe_subscription_id == who.subscription
    assert (member.email, member.visible) == (who.email, True)
    assert actions(db_session, event) == ["membership.status_changed"]


def test_checkout_email_is_matched_case_insensitively_to_an_existing_member(
    db_session: Session, pg_settings: Settings, who: StripeCustomer
) -> None:
    db_session.add(Member(email=who.email, clerk_user_id=f"user_{who.customer}"))
    db_session.flush()
    event = who.event("checkout.session.completed", created=T0)
    event["data"]["object"]["customer_details"]["email"] = who.email.upper()

    apply(db_session, pg_settings, event)

    member = member_of(db_session, who)
    assert member.clerk_user_id == f"user_{who.customer}"
    assert db_session.scalars(select(Member).where(Member.email == who.email)).all() == [member]


def test_the_same_event_applied_twice_changes_nothing_the_second_time(
    db_session: Session, pg_settings: Settings, who: StripeCustomer
) -> None:
    event = who.event("checkout.session.completed", created=T0)
    apply(db_session, pg_settings, event)
    parsed = StripeEvent.model_validate(event)
    inbox_id = db_session.scalars(
        select(WebhookEvent.id).where(WebhookEvent.event_id == event["id"])
    ).one()

    assert apply_checkout(db_session, parsed, inbox_id, pg_settings) == "already_applied"
    assert actions(db_session, event) == ["membership.status_changed"]


def test_subscription_before_checkout_still_ends_with_one_complete_member(
    db_session: Session, pg_settings: Settings, who: StripeCustomer
) -> None:
    apply(db_session, pg_settings, who.event("customer.subscription.created", created=T0))
    apply(db_session, pg_settings, who.event("checkout.session.completed", created=T0))

    member = member_of(db_session, who)
    membership = membership_of(db_session, who)
    assert member.email == who.email
    assert (membership.status, membership.tier) == ("active", "member")
    assert membership.current_period_end is not None


def test_cancel_at_period_end_schedules_deactivation_and_uncancel_restores_active(
    db_session: Session, pg_settings: Settings, who: StripeCustomer
) -> None:
    apply(db_session, pg_settings, who.event("customer.subscription.created", created=T0))
    apply(db_session, pg_settings, who.event("customer.subscription.updated", created=T0 + 10))
    scheduled = membership_of(db_session, who)
    assert scheduled.status == "cancel_scheduled"
    assert scheduled.deactivate_at is not None
    assert int(scheduled.deactivate_at.timestamp()) == 1766392000

    uncancel = who.event(
        "customer.subscription.updated",
        created=T0 + 20,
        cancel_at_period_end=False,
        cancel_at=None,
    )
    apply(db_session, pg_settings, uncancel)

    restored = membership_of(db_session, who)
    assert (restored.status, restored.deactivate_at) == ("active", None)


def test_older_update_after_deletion_is_skipped_as_stale(
    db_session: Session, pg_settings: Settings, who: StripeCustomer
) -> None:
    apply(db_session, pg_settings, who.event("customer.subscription.created", created=T0))
    apply(db_session, pg_settings, who.event("customer.subscription.deleted", created=T0 + 100))
    late = who.event("customer.subscription.updated", created=T0 + 50, cancel_at_period_end=False)

    assert apply(db_session, pg_settings, late) == "stale_event"

    membership = membership_of(db_session, who)
    assert membership.status == "canceled"
    assert membership.ended_at is not None
    assert member_of(db_session, who).visible is False
    assert actions(db_session, late) == ["membership.stale_event"]


def test_same_second_events_let_the_cancellation_win(
    db_session: Session, pg_settings: Settings, who: StripeCustomer
) -> None:
    apply(db_session, pg_settings, who.event("customer.subscription.deleted", created=T0))
    same_second = who.event("customer.subscription.created", created=T0)

    assert apply(db_session, pg_settings, same_second) == "stale_event"
    assert membership_of(db_session, who).status == "canceled"


def test_newer_payment_failure_cannot_reopen_a_canceled_subscription(
    db_session: Session, pg_settings: Settings, who: StripeCustomer
) -> None:
    apply(db_session, pg_settings, who.event("customer.subscription.deleted", created=T0))
    failure = who.event("invoice.payment_failed", created=T0 + 60)

    assert apply(db_session, pg_settings, failure) == "illegal_transition"
    assert membership_of(db_session, who).status == "canceled"
    assert actions(db_session, failure) == ["membership.illegal_transition"]


def test_a_new_subscription_revives_a_canceled_membership(
    db_session: Session, pg_settings: Settings, who: StripeCustomer
) -> None:
    apply(db_session, pg_settings, who.event("customer.subscription.deleted", created=T0))
    comeback = who.event(
        "checkout.session.completed", created=T0 + 500, subscription="sub_Tcomeback"
    )

    assert apply(db_session, pg_settings, comeback) == "applied"
    membership = membership_of(db_session, who)
    assert (membership.status, membership.stripe_subscription_id) == ("active", "sub_Tcomeback")
    assert membership.ended_at is None


def test_deletion_of_a_replaced_subscription_leaves_the_new_one_alone(
    db_session: Session, pg_settings: Settings, who: StripeCustomer
) -> None:
    apply(db_session, pg_settings, who.event("customer.subscription.created", created=T0))
    apply(
        db_session,
        pg_settings,
        who.event("customer.subscription.created", created=T0 + 10, subscription="sub_Tnew"),
    )
    old_end = who.event("customer.subscription.deleted", created=T0 + 20)

    assert apply(db_session, pg_settings, old_end) == "other_subscription"
    membership = membership_of(db_session, who)
    assert (membership.status, membership.stripe_subscription_id) == ("active", "sub_Tnew")


def test_failed_payment_sets_past_due_and_paid_invoice_restores_active(
    db_session: Session, pg_settings: Settings, who: StripeCustomer
) -> None:
    apply(db_session, pg_settings, who.event("checkout.session.completed", created=T0))
    apply(db_session, pg_settings, who.event("invoice.payment_failed", created=T0 + 10))
    assert membership_of(db_session, who).status == "past_due"

    apply(db_session, pg_settings, who.event("invoice.paid", created=T0 + 20))
    assert membership_of(db_session, who).status == "active"


def test_paid_invoice_does_not_undo_a_scheduled_cancellation(
    db_session: Session, pg_settings: Settings, who: StripeCustomer
) -> None:
    apply(db_session, pg_settings, who.event("customer.subscription.updated", created=T0))
    apply(db_session, pg_settings, who.event("invoice.paid", created=T0 + 10))

    assert membership_of(db_session, who).status == "cancel_scheduled"


def test_unmapped_price_falls_back_to_the_default_tier(
    db_session: Session, pg_settings: Settings
) -> None:
    who = StripeCustomer.new()
    who = StripeCustomer(who.customer, who.subscription, who.email, price="price_Unknown")

    apply(db_session, pg_settings, who.event("customer.subscription.created", created=T0))

    assert membership_of(db_session, who).tier == pg_settings.default_tier


def test_invoice_without_a_subscription_changes_no_membership(
    db_session: Session, pg_settings: Settings, who: StripeCustomer
) -> None:
    one_off = who.event("invoice.paid", created=T0, parent=None)

    assert apply(db_session, pg_settings, one_off) == "not_a_subscription"
    assert actions(db_session, one_off) == ["invoice.not_a_subscription"]


def test_subscription_first_then_clerk_signup_then_checkout_fold_into_one_member(
    db_session: Session, pg_settings: Settings, who: StripeCustomer
) -> None:
    apply(db_session, pg_settings, who.event("customer.subscription.created", created=T0))
    signup = Member(email=who.email, clerk_user_id=f"user_{who.customer}", name="Jenny Rosen")
    db_session.add(signup)
    db_session.flush()

    apply(db_session, pg_settings, who.event("checkout.session.completed", created=T0))

    member = member_of(db_session, who)
    assert (member.email, member.clerk_user_id) == (who.email, f"user_{who.customer}")
    assert db_session.scalars(select(Member).where(Member.email == who.email)).all() == [member]
    assert membership_of(db_session, who).status == "active"


def test_plan_change_moves_the_membership_to_the_new_tier(
    db_session: Session, pg_settings: Settings, who: StripeCustomer
) -> None:
    apply(db_session, pg_settings, who.event("customer.subscription.created", created=T0))
    upgraded = who.event(
        "customer.subscription.updated", created=T0 + 60, cancel_at_period_end=False, cancel_at=None
    )
    upgraded["data"]["object"]["items"]["data"][0]["price"]["id"] = "price_Patron"

    apply(db_session, pg_settings, upgraded)

    membership = membership_of(db_session, who)
    assert (membership.status, membership.tier) == ("active", "patron")


def test_stale_event_still_fills_the_tier_a_newer_event_did_not_carry(
    db_session: Session, pg_settings: Settings, who: StripeCustomer
) -> None:
    apply(db_session, pg_settings, who.event("invoice.payment_failed", created=T0 + 60))
    stale = who.event("customer.subscription.created", created=T0)

    assert apply(db_session, pg_settings, stale) == "stale_event"
    membership = membership_of(db_session, who)
    assert (membership.status, membership.tier) == ("past_due", "member")

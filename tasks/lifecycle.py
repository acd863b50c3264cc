"""Member lifecycle from Stripe: checkout, subscription changes and invoices become membership state.

Every handler is idempotent and order-proof: members are upserted on Stripe ids, an event already
applied is a no-op, an event older than the applied state is skipped, and an illegal move is recorded
instead of applied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from schemas.db import insert_ignoring_conflicts, session_scope
from schemas.settings import Settings
from schemas.stripe_events import CheckoutSession, Invoice, StripeEvent, Subscription, from_unix
from schemas.tables import AuditEntry, Member, Membership
from tasks import inbox
from tasks.membership_states import Status, from_stripe_subscription, is_allowed, is_stale
from workers import runtime
from workers.base_task import DATABASE_TASK_LIMITS, GatewayTask
from workers.celery_app import app
from workers.logging import get_logger

log = get_logger(__name__)
ACTOR = "stripe"
VISIBLE_STATUSES = frozenset({Status.ACTIVE, Status.PAST_DUE, Status.CANCEL_SCHEDULED})
STARTING_STATUSES = frozenset({Status.ACTIVE, Status.PENDING})
PAID_CHECKOUT = frozenset({"paid", "no_payment_required"})


@dataclass(frozen=True)
class Change:
    """What one Stripe event says the membership should become; None fields keep their value."""

    status: Status
    subscription_id: str
    # Apply `status` only from these statuses (invoice.paid heals past_due, it does not un-cancel).
    only_from: frozenset[Status] | None = None
    tier: str | None = None
    price_id: str | None = None
    period_end: datetime | None = None
    cancel_at_period_end: bool | None = None
    deactivate_at: datetime | None = None


Handler = Callable[[Session, StripeEvent, int, Settings], str]


# --- the handlers, one per event family -------------------------------------------------------


def apply_checkout(session: Session, event: StripeEvent, inbox_id: int, settings: Settings) -> str:
    checkout = CheckoutSession.model_validate(event.data.object)
    if checkout.mode != "subscription" or not checkout.customer or not checkout.subscription:
        _audit(session, "checkout.not_a_subscription", "checkout", checkout.id, inbox_id, event)
        return "not_a_subscription"
    member = upsert_member(
        session, customer_id=checkout.customer, email=checkout.email, name=checkout.name
    )
    price_id = checkout.metadata.get("price_id")
    change = Change(
        status=Status.ACTIVE if checkout.payment_status in PAID_CHECKOUT else Status.PENDING,
        subscription_id=checkout.subscription,
        price_id=price_id,
        tier=tier_for_price(settings, price_id) if price_id else None,
    )
    return apply_change(session, member, change, event, inbox_id)


def apply_subscription(
    session: Session, event: StripeEvent, inbox_id: int, settings: Settings
) -> str:
    subscription = Subscription.model_validate(event.data.object)
    scheduled = subscription.cancel_at_period_end or subscription.cancel_at is not None
    status = from_stripe_subscription(subscription.status, cancel_scheduled=scheduled)
    member = upsert_member(session, customer_id=subscription.customer, email=None, name=None)
    price_id = subscription.price_id
    change = Change(
        status=status,
        subscription_id=subscription.id,
        price_id=price_id,
        tier=tier_for_price(settings, price_id) if price_id else None,
        period_end=subscription.period_end,
        cancel_at_period_end=subscription.cancel_at_period_end,
        deactivate_at=from_unix(subscription.cancel_at) or subscription.period_end,
    )
    return apply_change(session, member, change, event, inbox_id)


def _invoice_handler(status: Status, only_from: frozenset[Status] | None) -> Handler:
    def handle(session: Session, event: StripeEvent, inbox_id: int, settings: Settings) -> str:
        invoice = Invoice.model_validate(event.data.object)
        if invoice.subscription_id is None:
            _audit(session, "invoice.not_a_subscription", "invoice", invoice.id, inbox_id, event)
            return "not_a_subscription"
        member = upsert_member(
            session, customer_id=invoice.customer, email=invoice.customer_email, name=None
        )
        change = Change(
            status=status,
            subscription_id=invoice.subscription_id,
            only_from=only_from,
            period_end=invoice.period_end,
        )
        return apply_change(session, member, change, event, inbox_id)

    return handle


apply_invoice_paid = _invoice_handler(Status.ACTIVE, frozenset({Status.PAST_DUE, Status.PENDING}))
apply_payment_failed = _invoice_handler(Status.PAST_DUE, None)


# --- the shared core -------------------------------------------------------------------------


def tier_for_price(settings: Settings, price_id: str) -> str:
    tier = settings.stripe_price_tiers.get(price_id)
    if tier is None:
        log.warning("lifecycle.price_unmapped", price_id=price_id, tier=settings.default_tier)
        return settings.default_tier
    return tier


def _locked_member(session: Session, condition: ColumnElement[bool]) -> Member | None:
    return session.scalar(select(Member).where(condition).with_for_update())


def upsert_member(
    session: Session, *, customer_id: str, email: str | None, name: str | None
) -> Member:
    """Find the member by Stripe customer id, else by email (a Clerk sign-up), else create it.

    The row is locked for the rest of the transaction, so two events of one customer processed
    at the same time apply one after the other.
    """
    email = email.strip().lower() if email else None
    member = _locked_member(session, Member.stripe_customer_id == customer_id)
    if member is None and email:
        member = _locked_member(session, Member.email == email)
        if member is not None and member.stripe_customer_id not in (None, customer_id):
            log.warning("lifecycle.email_has_other_customer", customer_id=customer_id)
            member, email = None, None
        elif member is not None:
            member.stripe_customer_id = customer_id
    if member is None:
        dialect = session.get_bind().dialect.name
        session.execute(
            insert_ignoring_conflicts(dialect, Member).values(
                stripe_customer_id=customer_id, email=email, name=name
            )
        )
        member = _locked_member(session, Member.stripe_customer_id == customer_id)
        if member is None:  # lost an insert race on the email to a concurrent sign-up
            return upsert_member(session, customer_id=customer_id, email=email, name=name)
    if email and member.email is None:
        member.email = email
    if name and member.name is None:
        member.name = name
    return member


def _locked_membership(session: Session, member: Member) -> Membership:
    query = select(Membership).where(Membership.member_id == member.id).with_for_update()
    membership = session.scalar(query)
    if membership is None:
        dialect = session.get_bind().dialect.name
        session.execute(
            insert_ignoring_conflicts(dialect, Membership).values(
                member_id=member.id, status=Status.PENDING
            )
        )
        membership = session.scalars(query).one()
    return membership


def apply_change(
    session: Session, member: Member, change: Change, event: StripeEvent, inbox_id: int
) -> str:
    """Apply `change` unless it is a repeat, stale, about an old subscription, or illegal."""
    membership = _locked_membership(session, member)
    current = Status(membership.status)
    if membership.last_event_id == event.id:
        return "already_applied"
    switching = change.subscription_id != membership.stripe_subscription_id
    target = change.status
    if change.only_from is not None and current not in change.only_from:
        target = current
    skip = _skip_reason(membership, current, target, switching, event)
    if skip is not None:
        _audit(
            session,
            f"membership.{skip}",
            "membership",
            str(membership.id),
            inbox_id,
            event,
            current=current,
            proposed=target,
        )
        log.info("lifecycle.skipped", reason=skip, current=current, proposed=target)
        return skip

    membership.status = target
    membership.stripe_subscription_id = change.subscription_id
    membership.tier = change.tier or membership.tier
    membership.stripe_price_id = change.price_id or membership.stripe_price_id
    membership.current_period_end = change.period_end or membership.current_period_end
    if change.cancel_at_period_end is not None:
        membership.cancel_at_period_end = change.cancel_at_period_end
    membership.deactivate_at = change.deactivate_at if target is Status.CANCEL_SCHEDULED else None
    if target is Status.CANCELED and membership.ended_at is None:
        membership.ended_at = event.created_at
    elif target is not Status.CANCELED:
        membership.ended_at = None
    membership.last_event_at = event.created_at
    membership.last_event_id = event.id
    member.visible = target in VISIBLE_STATUSES
    action = "membership.status_changed" if target is not current else "membership.updated"
    _audit(
        session,
        action,
        "membership",
        str(membership.id),
        inbox_id,
        event,
        previous=current,
        status=target,
        tier=membership.tier,
    )
    log.info("lifecycle.applied", previous=current, status=target, tier=membership.tier)
    return "applied"


def _skip_reason(
    membership: Membership, current: Status, target: Status, switching: bool, event: StripeEvent
) -> str | None:
    # Only a subscription that starts may replace the current one; news of a replaced one is ignored.
    replacing = switching and membership.stripe_subscription_id is not None
    if replacing and current is not Status.CANCELED and target not in STARTING_STATUSES:
        return "other_subscription"
    leaves_canceled = current is Status.CANCELED and target is not Status.CANCELED
    if is_stale(event.created_at, membership.last_event_at, leaves_canceled=leaves_canceled):
        return "stale_event"
    if not is_allowed(current, target, new_subscription=switching):
        return "illegal_transition"
    return None


def _audit(
    session: Session,
    action: str,
    entity_type: str,
    entity_id: str,
    inbox_id: int,
    event: StripeEvent,
    **detail: Any,
) -> None:
    session.add(
        AuditEntry(
            actor=ACTOR,
            action=action,
            entity_type=entity_type,
            entity_id=entity_id,
            inbox_id=inbox_id,
            detail={"stripe_event_id": event.id, "event_type": event.type, **detail},
        )
    )


# --- the tasks: a few lines each around the plain functions above ----------------------------


def run_handler(inbox_id: int, task_name: str, handler: Handler) -> str:
    """Apply and mark the handler finished in one transaction: both happen or neither does."""
    with session_scope(runtime.sessions()) as session:
        row = inbox.get(session, inbox_id)
        outcome = handler(
            session, StripeEvent.model_validate_json(row.body), inbox_id, runtime.settings()
        )
        inbox.finish(session, inbox_id, task_name)
    return outcome


@app.task(name="tasks.lifecycle.complete_checkout", base=GatewayTask, **DATABASE_TASK_LIMITS)
def complete_checkout(inbox_id: int) -> str:
    return run_handler(inbox_id, complete_checkout.name, apply_checkout)


@app.task(name="tasks.lifecycle.sync_subscription", base=GatewayTask, **DATABASE_TASK_LIMITS)
def sync_subscription(inbox_id: int) -> str:
    return run_handler(inbox_id, sync_subscription.name, apply_subscription)


@app.task(name="tasks.lifecycle.record_invoice_paid", base=GatewayTask, **DATABASE_TASK_LIMITS)
def record_invoice_paid(inbox_id: int) -> str:
    return run_handler(inbox_id, record_invoice_paid.name, apply_invoice_paid)


@app.task(name="tasks.lifecycle.record_payment_failed", base=GatewayTask, **DATABASE_TASK_LIMITS)
def record_payment_failed(inbox_id: int) -> str:
    return run_handler(inbox_id, record_payment_failed.name, apply_payment_failed)

"""Member lifecycle from Stripe: checkout, subscription changes and invoices become membership state.

Every handler is idempotent and order-proof: members are upserted on Stripe ids, an event already
applied is a no-op, an event older than the applied state is skipped, and an illegal move is recorded
instead of applied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, insert, inspect, or_, select
from sqlalchemy.orm import Session, make_transient_to_detached

from schemas.clerk_events import ClerkEvent, ClerkUser
from schemas.db import insert_ignoring_conflicts, session_scope, transaction_info
from schemas.settings import Settings
from schemas.stripe_events import CheckoutSession, Invoice, StripeEvent, Subscription, from_unix
from schemas.tables import Member, Membership, utcnow
from tasks import inbox
from tasks.dispatch import StepBody, database_step, finish_step, parsed, run_step
from tasks.membership_states import Status, from_stripe_subscription, is_allowed, is_stale
from workers import runtime
from workers.audit import audit
from workers.base_task import DATABASE_TASK_LIMITS, GatewayTask
from workers.celery_app import app
from workers.logging import get_logger

log = get_logger(__name__)
ACTOR = "stripe"
VISIBLE_STATUSES = frozenset({Status.ACTIVE, Status.PAST_DUE, Status.CANCEL_SCHEDULED})
STARTING_STATUSES = frozenset({Status.ACTIVE, Status.PENDING})
PAID_CHECKOUT = frozenset({"paid", "no_payment_required"})
# transaction_info key: members this transaction inserted that have no stored membership yet.
_NEW_MEMBERS = "hookfleet.new_members"


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
    price_id = checkout.metadata.get("price_id")
    change = Change(
        status=Status.ACTIVE if checkout.payment_status in PAID_CHECKOUT else Status.PENDING,
        subscription_id=checkout.subscription,
        price_id=price_id,
        tier=tier_for_price(settings, price_id) if price_id else None,
    )
    member = upsert_member(
        session,
        customer_id=checkout.customer,
        email=checkout.email,
        name=checkout.name,
        visible=_visible_when_new(change),
        likely_new=True,
    )
    return apply_change(session, member, change, event, inbox_id)


def apply_subscription(
    session: Session, event: StripeEvent, inbox_id: int, settings: Settings
) -> str:
    subscription = Subscription.model_validate(event.data.object)
    scheduled = subscription.cancel_at_period_end or subscription.cancel_at is not None
    status = from_stripe_subscription(subscription.status, cancel_scheduled=scheduled)
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
    member = upsert_member(
        session,
        customer_id=subscription.customer,
        email=None,
        name=None,
        visible=_visible_when_new(change),
    )
    return apply_change(session, member, change, event, inbox_id)


def _invoice_handler(status: Status, only_from: frozenset[Status] | None) -> Handler:
    def handle(session: Session, event: StripeEvent, inbox_id: int, settings: Settings) -> str:
        invoice = Invoice.model_validate(event.data.object)
        if invoice.subscription_id is None:
            _audit(session, "invoice.not_a_subscription", "invoice", invoice.id, inbox_id, event)
            return "not_a_subscription"
        change = Change(
            status=status,
            subscription_id=invoice.subscription_id,
            only_from=only_from,
            period_end=invoice.period_end,
        )
        member = upsert_member(
            session,
            customer_id=invoice.customer,
            email=invoice.customer_email,
            name=None,
            visible=_visible_when_new(change),
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
    session: Session,
    *,
    customer_id: str,
    email: str | None,
    name: str | None,
    visible: bool = False,
    likely_new: bool = False,
) -> Member:
    """Find the member by Stripe customer id, else by email (a Clerk sign-up), else create it
    (`visible` from the start when the change will make it so: no UPDATE right after the INSERT).
    When the member is `likely_new` (a checkout), the INSERT goes first: it stores a row only when
    neither the customer id nor the email has one, which saves a sign-up the locked read.

    The row is locked for the rest of the transaction, so two events of one customer processed
    at the same time apply one after the other.
    """
    email = email.strip().lower() if email else None
    if likely_new:
        member = _new_member(session, customer_id, email, name, visible)
        if member is not None:
            return member
    # One locked read for both ways of finding the member; the Stripe customer id wins.
    wanted = Member.stripe_customer_id == customer_id
    found = session.scalars(
        select(Member)
        .where(or_(wanted, Member.email == email) if email else wanted)
        .with_for_update()
    ).all()
    member = next((m for m in found if m.stripe_customer_id == customer_id), None)
    if member is None and email:
        member = next((m for m in found if m.email == email), None)
        if member is not None and member.stripe_customer_id not in (None, customer_id):
            log.warning("lifecycle.email_has_other_customer", customer_id=customer_id)
            member, email = None, None
        elif member is not None:
            member.stripe_customer_id = customer_id
    if member is None:
        member = _new_member(session, customer_id, email, name, visible)
        if member is None:  # lost an insert race on the customer or email to a concurrent event
            return upsert_member(
                session, customer_id=customer_id, email=email, name=name, visible=visible
            )
    if email and member.email is None:
        other = _locked_member(session, (Member.email == email) & (Member.id != member.id))
        if other is None or _merge_into(session, member, other):
            member.email = email
    if name and member.name is None:
        member.name = name
    return member


def _new_member(
    session: Session, customer_id: str, email: str | None, name: str | None, visible: bool
) -> Member | None:
    """The member inserted, or None when its customer id or email is already taken."""
    member: Member | None = session.scalar(
        _insert_member(session.get_bind().dialect.name),
        {"stripe_customer_id": customer_id, "email": email, "name": name, "visible": visible},
    )
    if member is not None:
        transaction_info(session, _NEW_MEMBERS)[member.id] = True
    return member


# The sign-up's INSERTs are built once and run with the values as parameters: the ORM's
# INSERT ... RETURNING of an entity rebuilt and re-keyed its statement on every sign-up.
_INSERT_MEMBERSHIP = insert(cast(Table, Membership.__table__)).returning(Membership.id)


@cache
def _insert_member(dialect_name: str) -> Any:
    """The member INSERT for the dialect, its row loaded as a Member the way a SELECT's is."""
    table = cast(Table, Member.__table__)
    inserted = insert_ignoring_conflicts(dialect_name, table).returning(*table.c)
    return select(Member).from_statement(inserted)


def _merge_into(session: Session, keep: Member, other: Member) -> bool:
    """One person, two rows: the Clerk sign-up (email, no customer) and the Stripe customer (no
    email yet, when the subscription event came first). Fold the sign-up into the paying row."""
    has_membership = session.scalar(select(Membership.id).where(Membership.member_id == other.id))
    if other.stripe_customer_id is not None or has_membership is not None:
        log.warning("lifecycle.member_merge_conflict", other_member=other.id)
        return False
    clerk_user_id, synced_at, name = other.clerk_user_id, other.clerk_synced_at, other.name
    session.delete(other)
    session.flush()  # the unique email and clerk id are free before `keep` takes them
    keep.clerk_user_id = keep.clerk_user_id or clerk_user_id
    keep.clerk_synced_at = keep.clerk_synced_at or synced_at
    keep.name = keep.name or name
    audit(
        session,
        actor="stripe",
        action="member.merged",
        entity_type="member",
        entity_id=keep.id,
        merged_member=other.id,
    )
    return True


def _locked_membership(session: Session, member: Member) -> Membership:
    """The member's membership, locked; for a member this transaction created, a new one not yet
    stored (`_stored` inserts it with the change already on it: no UPDATE right after the INSERT)."""
    if member.id in transaction_info(session, _NEW_MEMBERS):
        return Membership(member_id=member.id, status=Status.PENDING, cancel_at_period_end=False)
    query = select(Membership).where(Membership.member_id == member.id).with_for_update()
    membership = session.scalar(query)
    if membership is None:
        dialect = session.get_bind().dialect.name
        membership = (
            session.scalar(
                insert_ignoring_conflicts(dialect, Membership)
                .values(member_id=member.id, status=Status.PENDING)
                .returning(Membership)
            )
            or session.scalars(query).one()
        )  # a concurrent event made it first
    return membership


def _stored(session: Session, membership: Membership) -> Membership:
    """The membership as a stored row (its id is what the audit names): a new one is inserted
    now, with the change already on it."""
    if membership.id is not None:
        return membership
    transaction_info(session, _NEW_MEMBERS).pop(membership.member_id, None)
    given = inspect(membership).dict
    values = {c.key: given[c.key] for c in inspect(Membership).column_attrs if c.key in given}
    membership.id = session.execute(_INSERT_MEMBERSHIP, values).scalar_one()
    # Persistent from here, as if just loaded: later changes to it are flushed as an UPDATE.
    make_transient_to_detached(membership)
    session.add(membership)
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
    target = _target(change, current)
    skip = _skip_reason(membership, current, target, switching, event)
    if skip is not None:
        if membership.id is None:  # a member created for this change, which did not apply
            member.visible = False
        membership = _stored(session, membership)
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
        if skip == "stale_event" and not switching:
            _fill_gaps(membership, change)
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
    membership = _stored(session, membership)
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


def _target(change: Change, current: Status) -> Status:
    """The status `change` moves a membership at `current` to."""
    if change.only_from is not None and current not in change.only_from:
        return current
    return change.status


def _visible_when_new(change: Change) -> bool:
    """Whether a member created for `change` ends up visible (its new membership starts pending;
    should the change be refused, apply_change hides the member again)."""
    return _target(change, Status.PENDING) in VISIBLE_STATUSES


def _fill_gaps(membership: Membership, change: Change) -> None:
    """A stale event of the same subscription still knows facts nothing newer contradicted yet
    (its tier, price, period end): they fill empty fields, so arrival order cannot lose them."""
    membership.tier = membership.tier or change.tier
    membership.stripe_price_id = membership.stripe_price_id or change.price_id
    membership.current_period_end = membership.current_period_end or change.period_end


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
    audit(
        session,
        actor=ACTOR,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        inbox_id=inbox_id,
        stripe_event_id=event.id,
        event_type=event.type,
        **detail,
    )


# --- Clerk: who the person is ------------------------------------------------------------------


ClerkHandler = Callable[[Session, ClerkUser, datetime, int], str]


def _clerk_time(event: ClerkEvent, user_data: dict[str, Any]) -> datetime:
    """Clerk's `updated_at` (ms) orders user changes; a deletion carries only the event time."""
    stamp = user_data.get("updated_at") or event.timestamp or 0
    return datetime.fromtimestamp(int(stamp) / 1000, UTC)


def _member_audit(
    session: Session, action: str, member: Member, inbox_id: int, **detail: Any
) -> None:
    audit(
        session,
        actor="clerk",
        action=action,
        entity_type="member",
        entity_id=member.id,
        inbox_id=inbox_id,
        **detail,
    )


def _clerk_member(session: Session, user: ClerkUser) -> Member | None:
    return _locked_member(session, Member.clerk_user_id == user.id)


def _is_stale_for(member: Member, at: datetime) -> bool:
    return member.anonymised_at is not None or (
        member.clerk_synced_at is not None and at < member.clerk_synced_at
    )


def link_clerk_user(session: Session, user: ClerkUser, at: datetime, inbox_id: int) -> str:
    """Create the member, or link the one a Stripe checkout already made for the same email."""
    email = user.primary_email
    dialect = session.get_bind().dialect.name
    # An insert that lost the address (or the user id) to a concurrent checkout or event of this
    # user looks again, once: the row it waited for is committed and is the one to link.
    for _ in range(2):
        member = _clerk_member(session, user)
        if member is None and email:
            member = _locked_member(session, Member.email == email)
            if member is not None and member.clerk_user_id not in (None, user.id):
                log.warning("lifecycle.email_has_other_clerk_user")
                return "email_taken"
        if member is not None:
            action = "member.linked"
            break
        member = session.scalar(
            insert_ignoring_conflicts(dialect, Member)
            .values(clerk_user_id=user.id, email=email, name=user.name)
            .returning(Member)
        )
        if member is not None:
            action = "member.created"
            break
    else:
        return "email_taken"  # taken again by a row that was gone when looked for
    if _is_stale_for(member, at) and action == "member.linked":
        return "stale_event"
    member.clerk_user_id = user.id
    member.email = member.email or email
    member.name = member.name or user.name
    member.clerk_synced_at = at
    _member_audit(session, action, member, inbox_id, clerk_user_id=user.id)
    return "applied"


def update_clerk_user(session: Session, user: ClerkUser, at: datetime, inbox_id: int) -> str:
    member = _clerk_member(session, user)
    if member is None:
        return link_clerk_user(session, user, at, inbox_id)
    if _is_stale_for(member, at):
        return "stale_event"
    email = user.primary_email
    if email and email != member.email:
        taken = session.scalar(
            select(Member.id).where(Member.email == email, Member.id != member.id)
        )
        if taken is not None:
            _member_audit(session, "member.email_conflict", member, inbox_id)
            return "email_taken"
        member.email = email
        _member_audit(session, "member.email_changed", member, inbox_id)
    member.name = user.name or member.name
    member.clerk_synced_at = at
    return "applied"


def anonymise_member(session: Session, user: ClerkUser, at: datetime, inbox_id: int) -> str:
    """Clerk deleted the user: drop personal data, keep the ids our other rows point at."""
    member = _clerk_member(session, user)
    if member is None or member.anonymised_at is not None:
        return "nothing_to_do"
    member.email, member.name, member.visible = None, None, False
    member.anonymised_at = at
    _member_audit(session, "member.anonymised", member, inbox_id)
    return "applied"


def clerk_step(task_name: str, handler: ClerkHandler) -> StepBody:
    """`handler` as a database step: apply the user change, finish the step, name the next."""

    def body(session: Session, inbox_id: int) -> tuple[str, str | None]:
        event = ClerkEvent.model_validate_json(inbox.get(session, inbox_id).body)
        user = ClerkUser.model_validate(event.data)
        outcome = handler(session, user, _clerk_time(event, event.data), inbox_id)
        log.info("lifecycle.clerk", outcome=outcome)
        return outcome, finish_step(session, inbox_id, task_name)

    return database_step(task_name)(body)


# --- the end of a paid period, swept by beat ----------------------------------------------------

DEACTIVATION_BATCH = 500


def end_due_memberships(session: Session, now: datetime) -> list[int]:
    """Cancel memberships whose scheduled end has passed; return their members' ids."""
    due = session.scalars(
        select(Membership)
        .where(
            Membership.status == Status.CANCEL_SCHEDULED,
            Membership.deactivate_at.is_not(None),
            Membership.deactivate_at <= now,
        )
        .order_by(Membership.id)
        .limit(DEACTIVATION_BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    for membership in due:
        membership.status = Status.CANCELED
        membership.ended_at = membership.deactivate_at
        member = session.get(Member, membership.member_id)
        if member is not None:
            member.visible = False
        audit(
            session,
            actor="scheduler",
            action="membership.deactivated",
            entity_type="membership",
            entity_id=membership.id,
            deactivate_at=membership.deactivate_at.isoformat()
            if membership.deactivate_at
            else None,
        )
    return [membership.member_id for membership in due]


# --- the tasks: a few lines each around the plain functions above ----------------------------


def stripe_step(task_name: str, handler: Handler) -> StepBody:
    """`handler` as a database step: apply the change and mark the step finished in the caller's
    transaction, name the next step (a repeat is `already_applied`)."""

    def body(session: Session, inbox_id: int) -> tuple[str, str | None]:
        row = inbox.get(session, inbox_id)
        event = parsed(session, row, StripeEvent)
        outcome = handler(session, event, inbox_id, runtime.settings())
        return outcome, finish_step(session, inbox_id, task_name)

    return database_step(task_name)(body)


COMPLETE_CHECKOUT = "tasks.lifecycle.complete_checkout"
SYNC_SUBSCRIPTION = "tasks.lifecycle.sync_subscription"
RECORD_INVOICE_PAID = "tasks.lifecycle.record_invoice_paid"
RECORD_PAYMENT_FAILED = "tasks.lifecycle.record_payment_failed"
LINK_CLERK_USER = "tasks.lifecycle.link_clerk_user"
UPDATE_CLERK_USER = "tasks.lifecycle.update_clerk_user"
ANONYMISE_MEMBER = "tasks.lifecycle.anonymise_member"
stripe_step(COMPLETE_CHECKOUT, apply_checkout)
stripe_step(SYNC_SUBSCRIPTION, apply_subscription)
stripe_step(RECORD_INVOICE_PAID, apply_invoice_paid)
stripe_step(RECORD_PAYMENT_FAILED, apply_payment_failed)
clerk_step(LINK_CLERK_USER, link_clerk_user)
clerk_step(UPDATE_CLERK_USER, update_clerk_user)
clerk_step(ANONYMISE_MEMBER, anonymise_member)


@app.task(name=COMPLETE_CHECKOUT, base=GatewayTask, **DATABASE_TASK_LIMITS)
def complete_checkout(inbox_id: int) -> str:
    return run_step(inbox_id, COMPLETE_CHECKOUT)


@app.task(name=SYNC_SUBSCRIPTION, base=GatewayTask, **DATABASE_TASK_LIMITS)
def sync_subscription(inbox_id: int) -> str:
    return run_step(inbox_id, SYNC_SUBSCRIPTION)


@app.task(name=RECORD_INVOICE_PAID, base=GatewayTask, **DATABASE_TASK_LIMITS)
def record_invoice_paid(inbox_id: int) -> str:
    return run_step(inbox_id, RECORD_INVOICE_PAID)


@app.task(name=RECORD_PAYMENT_FAILED, base=GatewayTask, **DATABASE_TASK_LIMITS)
def record_payment_failed(inbox_id: int) -> str:
    return run_step(inbox_id, RECORD_PAYMENT_FAILED)


@app.task(name=LINK_CLERK_USER, base=GatewayTask, **DATABASE_TASK_LIMITS)
def link_clerk_user_task(inbox_id: int) -> str:
    return run_step(inbox_id, LINK_CLERK_USER)


@app.task(name=UPDATE_CLERK_USER, base=GatewayTask, **DATABASE_TASK_LIMITS)
def update_clerk_user_task(inbox_id: int) -> str:
    return run_step(inbox_id, UPDATE_CLERK_USER)


@app.task(name=ANONYMISE_MEMBER, base=GatewayTask, **DATABASE_TASK_LIMITS)
def anonymise_member_task(inbox_id: int) -> str:
    return run_step(inbox_id, ANONYMISE_MEMBER)


@app.task(name="tasks.lifecycle.end_due_memberships", soft_time_limit=50, time_limit=55)
def end_due_memberships_task() -> int:
    with session_scope(runtime.sessions()) as session:
        member_ids = end_due_memberships(session, utcnow())
    # After the commit: each member's Mailchimp tags follow (active off, alumni on).
    for member_id in member_ids:
        app.send_task("tasks.member_sync.sync_mailchimp_member", args=[member_id])
    log.info("lifecycle.deactivated", count=len(member_ids))
    return len(member_ids)

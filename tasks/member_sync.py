"""Members' state pushed to the systems that mirror it: Mailchimp tags and addresses, Stripe emails.

Syncs read the member's current state from our database and upsert it (never the event's view), so
the order events arrive in does not matter; the member row is locked during a sync, so two syncs of
one member run one after the other and the later one writes the latest state.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas.clerk_events import ClerkEvent, ClerkUser
from schemas.db import session_scope
from schemas.settings import Settings
from schemas.tables import Member, Membership
from tasks import inbox
from tasks.clients import configured, not_configured
from tasks.clients.mailchimp import MailchimpClient
from tasks.clients.stripe import StripeApi
from tasks.dispatch import step_done
from tasks.members import member_for_event, membership_of
from tasks.membership_states import Status
from workers import runtime
from workers.base_task import PROVIDER_CALL_TASK_LIMITS, GatewayTask
from workers.celery_app import app
from workers.logging import get_logger

log = get_logger(__name__)
LIVE = frozenset({Status.ACTIVE, Status.PAST_DUE, Status.CANCEL_SCHEDULED})


def mailchimp_tags(membership: Membership, settings: Settings) -> dict[str, bool]:
    """The tags a member should carry: `member`, their tier only, `active` while paid up, `alumni`
    once ended. Every other tier is switched off, so a plan change moves the tag."""
    tiers = {*settings.stripe_price_tiers.values(), settings.default_tier}
    tags = {tier: tier == membership.tier for tier in tiers}
    tags.update(
        member=True,
        active=membership.status in LIVE,
        alumni=membership.status == Status.CANCELED,
    )
    return tags


def sync_member_to_mailchimp(session: Session, member_id: int, client: MailchimpClient) -> str:
    """Upsert the subscriber and its tags from the member's current state."""
    member = session.scalar(select(Member).where(Member.id == member_id).with_for_update())
    membership = membership_of(session, member) if member else None
    if member is None or membership is None or not member.email:
        return "no_subscriber"
    if membership.status == Status.PENDING:
        return "not_paid_yet"
    first, _, last = (member.name or "").partition(" ")
    client.upsert_member(member.email, merge_fields={"FNAME": first, "LNAME": last})
    client.set_tags(member.email, mailchimp_tags(membership, runtime.settings()))
    return "synced"


def _clerk_user(session: Session, inbox_id: int) -> tuple[Member | None, ClerkUser]:
    row = inbox.get(session, inbox_id)
    user = ClerkUser.model_validate(ClerkEvent.model_validate_json(row.body).data)
    return member_for_event(session, row, lock=True), user


def change_mailchimp_email(session: Session, inbox_id: int, client: MailchimpClient) -> str:
    """Clerk changed the primary email: move the subscriber before our record forgets the old one."""
    member, user = _clerk_user(session, inbox_id)
    new = user.primary_email
    if member is None or not member.email or not new or new == member.email:
        return "unchanged"
    if membership_of(session, member) is None:
        return "no_subscriber"
    client.change_email(member.email, new)
    return "moved"


def update_stripe_customer_email(session: Session, inbox_id: int, api: StripeApi) -> str:
    member, user = _clerk_user(session, inbox_id)
    new = user.primary_email
    if member is None or member.stripe_customer_id is None or not new or new == member.email:
        return "unchanged"
    # Keyed on the change itself (user, Clerk's update time, address), not on the inbox event: a
    # retry, a replay or the same change delivered again under another message id is one request.
    change = hashlib.sha256(f"{user.id}:{user.updated_at or inbox_id}:{new}".encode()).hexdigest()
    api.update_customer(
        member.stripe_customer_id, email=new, idempotency_key=f"hookfleet-email-{change[:32]}"
    )
    return "updated"


def remove_from_mailchimp(session: Session, inbox_id: int, client: MailchimpClient) -> str:
    """Clerk deleted the user: their subscriber goes too (before the member is anonymised)."""
    member, _ = _clerk_user(session, inbox_id)
    if member is None or not member.email:
        return "no_subscriber"
    client.delete_member(member.email)
    return "deleted"


# --- the tasks ----------------------------------------------------------------------------------


def _mailchimp() -> MailchimpClient:
    return MailchimpClient(runtime.settings())


@app.task(
    name="tasks.member_sync.sync_mailchimp_for_event", base=GatewayTask, **PROVIDER_CALL_TASK_LIMITS
)
def sync_mailchimp_for_event(inbox_id: int) -> str:
    if not configured("mailchimp", runtime.settings()):
        outcome = not_configured("mailchimp")
    else:
        with session_scope(runtime.sessions()) as session, _mailchimp() as client:
            member = member_for_event(session, inbox.get(session, inbox_id))
            outcome = (
                sync_member_to_mailchimp(session, member.id, client) if member else "no_member"
            )
    step_done(inbox_id, sync_mailchimp_for_event.name)
    return outcome


class _MemberTask(GatewayTask):
    carries_inbox_id = False


@app.task(
    name="tasks.member_sync.sync_mailchimp_member", base=_MemberTask, **PROVIDER_CALL_TASK_LIMITS
)
def sync_mailchimp_member(member_id: int) -> str:
    if not configured("mailchimp", runtime.settings()):
        return not_configured("mailchimp")
    with session_scope(runtime.sessions()) as session, _mailchimp() as client:
        return sync_member_to_mailchimp(session, member_id, client)


@app.task(
    name="tasks.member_sync.change_mailchimp_email", base=GatewayTask, **PROVIDER_CALL_TASK_LIMITS
)
def change_mailchimp_email_task(inbox_id: int) -> str:
    if not configured("mailchimp", runtime.settings()):
        outcome = not_configured("mailchimp")
    else:
        with session_scope(runtime.sessions()) as session, _mailchimp() as client:
            outcome = change_mailchimp_email(session, inbox_id, client)
    step_done(inbox_id, change_mailchimp_email_task.name)
    return outcome


@app.task(
    name="tasks.member_sync.update_stripe_customer_email",
    base=GatewayTask,
    **PROVIDER_CALL_TASK_LIMITS,
)
def update_stripe_customer_email_task(inbox_id: int) -> str:
    if not configured("stripe", runtime.settings()):
        outcome = not_configured("stripe")
    else:
        with session_scope(runtime.sessions()) as session:
            outcome = update_stripe_customer_email(session, inbox_id, StripeApi(runtime.settings()))
    step_done(inbox_id, update_stripe_customer_email_task.name)
    return outcome


@app.task(
    name="tasks.member_sync.remove_from_mailchimp", base=GatewayTask, **PROVIDER_CALL_TASK_LIMITS
)
def remove_from_mailchimp_task(inbox_id: int) -> str:
    if not configured("mailchimp", runtime.settings()):
        outcome = not_configured("mailchimp")
    else:
        with session_scope(runtime.sessions()) as session, _mailchimp() as client:
            outcome = remove_from_mailchimp(session, inbox_id, client)
    step_done(inbox_id, remove_from_mailchimp_task.name)
    return outcome

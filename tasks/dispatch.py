"""process_event: parse a stored webhook and run the steps its type needs, in order.

DISPATCH is the one table of what happens for each event: an ordered pipeline of task names. Each
step runs after the one before it has finished (a Mailchimp sync reads the state the lifecycle step
wrote; an email goes out only for an applied change), and a replayed dead letter picks the pipeline
up where it stopped. A type a provider module accepts but that is absent here is stored and marked
`ignored`; tests hold the two lists together.
"""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy.orm import Session

from schemas.db import session_scope
from schemas.settings import Settings
from schemas.stripe_events import StripeEvent
from schemas.tables import InboxStatus, utcnow
from tasks import inbox
from tasks.clients import configured, not_configured
from workers import runtime
from workers.base_task import DATABASE_TASK_LIMITS, GatewayTask
from workers.celery_app import app
from workers.logging import get_logger

log = get_logger(__name__)

MAILCHIMP_SYNC = "tasks.member_sync.sync_mailchimp_for_event"
DISPATCH: dict[tuple[str, str], tuple[str, ...]] = {
    ("stripe", "checkout.session.completed"): (
        "tasks.lifecycle.complete_checkout",
        MAILCHIMP_SYNC,
        "tasks.notification.send_welcome_email",
    ),
    ("stripe", "customer.subscription.created"): (
        "tasks.lifecycle.sync_subscription",
        MAILCHIMP_SYNC,
    ),
    ("stripe", "customer.subscription.updated"): (
        "tasks.lifecycle.sync_subscription",
        MAILCHIMP_SYNC,
    ),
    ("stripe", "customer.subscription.deleted"): (
        "tasks.lifecycle.sync_subscription",
        MAILCHIMP_SYNC,
    ),
    ("stripe", "invoice.paid"): ("tasks.lifecycle.record_invoice_paid", MAILCHIMP_SYNC),
    ("stripe", "invoice.payment_failed"): (
        "tasks.lifecycle.record_payment_failed",
        "tasks.notification.email_payment_failed",
        "tasks.notification.announce_payment_failed",
    ),
    ("clerk", "user.created"): ("tasks.lifecycle.link_clerk_user",),
    # The old address is read from the member before the last step overwrites it.
    ("clerk", "user.updated"): (
        "tasks.member_sync.change_mailchimp_email",
        "tasks.member_sync.update_stripe_customer_email",
        "tasks.lifecycle.update_clerk_user",
    ),
    ("clerk", "user.deleted"): (
        "tasks.member_sync.remove_from_mailchimp",
        "tasks.lifecycle.anonymise_member",
    ),
    ("airtable", "airtable.ping"): ("tasks.sync.fetch_airtable_payloads",),
}

# Event types a provider module accepts and stores on purpose, with nothing to run yet; they are
# marked `ignored` in the inbox and can be replayed once a task is added above.
IGNORED_TYPES: dict[str, tuple[str, ...]] = {
    "calcom": (
        "BOOKING_CANCELLED",
        "BOOKING_CREATED",
        "BOOKING_RESCHEDULED",
        "MEETING_ENDED",
    ),
    "clerk": ("session.created",),
    "daily": (
        "meeting.ended",
        "meeting.started",
        "participant.joined",
        "participant.left",
        "recording.ready-to-download",
    ),
    "instantly": (
        "email_bounced",
        "email_opened",
        "email_sent",
        "lead_interested",
        "lead_unsubscribed",
        "reply_received",
    ),
    "luma": (
        "event.canceled",
        "event.created",
        "event.updated",
        "guest.registered",
        "guest.updated",
        "ticket.registered",
    ),
    "mailchimp": (
        "campaign",
        "cleaned",
        "profile",
        "subscribe",
        "unsubscribe",
        "upemail",
    ),
    "quickbooks": (
        "customer.create",
        "invoice.update",
        "payment.create",
        "qbo.customer.created.v1",
    ),
    "sendgrid": (
        "bounce",
        "click",
        "deferred",
        "delivered",
        "dropped",
        "group_unsubscribe",
        "open",
        "processed",
        "spamreport",
        "unsubscribe",
    ),
    "slack": (
        "app_mention",
        "app_rate_limited",
        "member_joined_channel",
        "team_join",
        "user_change",
    ),
    "twilio": (
        "call.completed",
        "message.delivered",
        "message.failed",
        "message.received",
    ),
    "zapier": (
        "lead.captured",
        "member.upsert",
        "zap.payload",
    ),
}
IGNORED = frozenset((provider, t) for provider, types in IGNORED_TYPES.items() for t in types)

# The envelope a provider's body must parse into before anything runs on it (where we act on it).
ENVELOPES: dict[str, type[BaseModel]] = {"stripe": StripeEvent}

# Steps whose whole work is a call to one provider: where the platform does not use that provider
# (its key is unset), the step is marked finished without sending a task for it.
STEP_SERVICES: dict[str, str] = {
    MAILCHIMP_SYNC: "mailchimp",
    "tasks.member_sync.change_mailchimp_email": "mailchimp",
    "tasks.member_sync.remove_from_mailchimp": "mailchimp",
    "tasks.member_sync.update_stripe_customer_email": "stripe",
    "tasks.notification.send_welcome_email": "sendgrid",
    "tasks.notification.email_payment_failed": "sendgrid",
    "tasks.notification.announce_payment_failed": "slack",
}


def route_event(session: Session, inbox_id: int) -> tuple[str, ...]:
    """Validate the stored body and return the steps still to run, in order; none when done."""
    row = inbox.get(session, inbox_id)
    if row.status in inbox.DONE:
        log.info("event.already_done", status=row.status)
        return ()
    envelope = ENVELOPES.get(row.provider)
    if envelope is not None:
        envelope.model_validate_json(row.body)
    row.attempts += 1
    handlers = DISPATCH.get((row.provider, row.event_type), ())
    row.handler_count = len(handlers)
    # After a lost message or a sweep, send only the handlers that have not finished yet.
    done = (
        inbox.finished_handlers(session, inbox_id)
        if row.status == InboxStatus.DISPATCHED
        else set()
    )
    names = tuple(name for name in handlers if name not in done)
    if handlers:
        row.status = InboxStatus.DISPATCHED
    else:
        row.status, row.processed_at = InboxStatus.IGNORED, utcnow()
    log.info("event.routed", event_type=row.event_type, tasks=list(names))
    return names


def next_step(session: Session, inbox_id: int) -> str | None:
    """The first step of the event's pipeline that has not finished, if any."""
    row = inbox.get(session, inbox_id)
    done = inbox.finished_handlers(session, inbox_id)
    remaining = [
        name for name in DISPATCH.get((row.provider, row.event_type), ()) if name not in done
    ]
    return remaining[0] if remaining else None


def skip_unused(
    session: Session, inbox_id: int, step: str | None, settings: Settings
) -> str | None:
    """`step`, or the first step from it on whose provider the platform uses: the steps before it
    are marked finished without a task (each would only have said `not_configured`)."""
    while step is not None and (service := STEP_SERVICES.get(step)) is not None:
        if configured(service, settings):
            break
        not_configured(service)
        inbox.finish(session, inbox_id, step)
        step = next_step(session, inbox_id)
    return step


def finish_step(session: Session, inbox_id: int, task_name: str) -> str | None:
    """Mark `task_name` finished in the caller's transaction (with the change it made, so the two
    commit together); return the step to send once that transaction has committed."""
    inbox.finish(session, inbox_id, task_name)
    return skip_unused(session, inbox_id, next_step(session, inbox_id), runtime.settings())


def send_step(inbox_id: int, step: str | None) -> None:
    """Send the step `finish_step` returned; only after its transaction committed."""
    if step is not None:
        app.send_task(step, args=[inbox_id])


def step_done(inbox_id: int, task_name: str) -> str | None:
    """Mark `task_name` finished for the event and send the next step (after the commit); for steps
    whose work is a call to a provider, done outside any transaction."""
    with session_scope(runtime.sessions()) as session:
        following = finish_step(session, inbox_id, task_name)
    send_step(inbox_id, following)
    return following


# Lifecycle steps change only our database: when one comes first, process_event runs it itself
# instead of sending it, a broker hop and a task start fewer per event. A failure there retries or
# dead-letters process_event, whose next run resumes the pipeline at that same step.
INLINE_FIRST_STEPS = frozenset(
    step
    for pipeline in DISPATCH.values()
    for step in pipeline
    if step.startswith("tasks.lifecycle.")
)


@app.task(name="tasks.dispatch.process_event", base=GatewayTask, **DATABASE_TASK_LIMITS)
def process_event(inbox_id: int) -> list[str]:
    with session_scope(runtime.sessions()) as session:
        steps = route_event(session, inbox_id)
        first = skip_unused(session, inbox_id, steps[0], runtime.settings()) if steps else None
    # After the commit; a redelivered process_event does it again, and every step is idempotent.
    if first in INLINE_FIRST_STEPS:
        app.tasks[first].run(inbox_id)  # commits, then sends the step after it
    else:
        send_step(inbox_id, first)
    return list(steps)

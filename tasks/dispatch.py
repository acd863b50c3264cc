"""process_event: parse a stored webhook and run the steps its type needs, in order.

DISPATCH is the one table of what happens for each event: an ordered pipeline of task names. Each
step runs after the one before it has finished (a Mailchimp sync reads the state the lifecycle step
wrote; an email goes out only for an applied change), and a replayed dead letter picks the pipeline
up where it stopped. A type a provider module accepts but that is absent here is stored and marked
`ignored`; tests hold the two lists together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from pydantic import BaseModel
from sqlalchemy.orm import Session

from schemas.db import session_scope, transaction_info
from schemas.settings import Settings
from schemas.stripe_events import StripeEvent
from schemas.tables import InboxStatus, WebhookEvent, utcnow
from tasks import inbox
from tasks.clients import configured, not_configured
from workers import runtime
from workers.audit import audits_together
from workers.base_task import (
    DATABASE_TASK_LIMITS,
    DatabaseUnreachableError,
    GatewayTask,
    database_down,
)
from workers.celery_app import app
from workers.enqueue import publish_each
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
Envelope = TypeVar("Envelope", bound=BaseModel)
_PARSED = "hookfleet.parsed_bodies"  # transaction_info key: (inbox id, model) -> parsed body

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
    """Validate the stored body and return the steps still to run, in order; none when done.

    The row stays locked to the end of the transaction, which may go on to run the first step."""
    row = inbox.get(session, inbox_id, lock=True)
    if row.status in inbox.DONE:
        log.info("event.already_done", status=row.status)
        return ()
    envelope = ENVELOPES.get(row.provider)
    if envelope is not None:
        parsed(session, row, envelope)
    row.attempts += 1
    if row.enqueued_at is None:  # taken before the relay's mark reached it (the relay skips it)
        row.enqueued_at = utcnow()
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


def parsed(session: Session, row: WebhookEvent, model: type[Envelope]) -> Envelope:
    """The row's body as `model`, parsed once per transaction (routing validates it, and the
    database step run in the same transaction reads it)."""
    cache = transaction_info(session, _PARSED)
    key = (row.id, model)
    if key not in cache:
        cache[key] = model.model_validate_json(row.body)
    result: Envelope = cache[key]
    return result


def _unfinished(row: WebhookEvent, done: set[str]) -> list[str]:
    """The event's pipeline steps not in `done`, in order."""
    return [name for name in DISPATCH.get((row.provider, row.event_type), ()) if name not in done]


def unused(step: str, settings: Settings) -> bool:
    """A step whose whole work is a call to a provider the platform has no key for."""
    service = STEP_SERVICES.get(step)
    return service is not None and not configured(service, settings)


def finish_step(
    session: Session, inbox_id: int, task_name: str | None, settings: Settings | None = None
) -> str | None:
    """Mark `task_name` finished in the caller's transaction (with the change it made, so the two
    commit together), and with it the steps right after it that would only have said
    `not_configured`; return the step to send once that transaction has committed.

    One lock, one read and at most one insert however many steps finish: this runs for every step.
    """
    settings = settings or runtime.settings()
    row = inbox.lock(session, inbox_id)
    if row.status in inbox.DONE:  # a step delivered again after the event was processed
        return None
    done = inbox.finished_handlers(session, inbox_id)
    finishing = [task_name] if task_name is not None and task_name not in done else []
    done.update(finishing)
    remaining = _unfinished(row, done)
    while remaining and unused(remaining[0], settings):
        not_configured(STEP_SERVICES[remaining[0]])
        finishing.append(remaining.pop(0))
        done.add(finishing[-1])
    if finishing:
        inbox.record_finished(session, row, finishing, len(done))
    return remaining[0] if remaining else None


def skip_unused(session: Session, inbox_id: int, settings: Settings) -> str | None:
    """The event's next step from which the platform uses the provider: the unused ones before it
    are marked finished without a task (each would only have said `not_configured`)."""
    return finish_step(session, inbox_id, None, settings)


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


# A step whose whole work is in our database: it applies its change and finishes itself in the
# session it is given, returning its outcome and the step after it.
StepBody = Callable[[Session, int], tuple[str, str | None]]
# Filled by the modules that define such steps (tasks.lifecycle).
DATABASE_STEPS: dict[str, StepBody] = {}


def database_step(name: str) -> Callable[[StepBody], StepBody]:
    def register(body: StepBody) -> StepBody:
        DATABASE_STEPS[name] = body
        return body

    return register


def run_step(inbox_id: int, name: str) -> str:
    """A database step as its own task: one transaction, then the next step is sent."""
    with session_scope(runtime.sessions()) as session:
        outcome, following = DATABASE_STEPS[name](session, inbox_id)
    send_step(inbox_id, following)
    return outcome


@app.task(name="tasks.dispatch.process_event", base=GatewayTask, **DATABASE_TASK_LIMITS)
def process_event(inbox_id: int) -> list[str]:
    """Route the event; when its first step is a database step, run it in the same transaction
    (a broker hop, a task start and a commit fewer per event)."""
    settings = runtime.settings()
    started: list[str] = []
    try:
        # No autoflush: routing's changes to the row and the step's go out in one flush at commit.
        with session_scope(runtime.sessions()) as session, session.no_autoflush:
            steps, following = _route_and_start(session, inbox_id, settings, started)
    except Exception:
        if started:  # retried or dead-lettered as process_event, resuming at this step
            with session_scope(runtime.sessions()) as session:
                inbox.count_attempt(session, inbox_id)
        raise
    # After the commit; a redelivered process_event does it again, and every step is idempotent.
    send_step(inbox_id, following)
    return list(steps)


def _route_and_start(
    session: Session, inbox_id: int, settings: Settings, started: list[str]
) -> tuple[tuple[str, ...], str | None]:
    """Route the event and run its first step when that is a database step (named in `started`);
    returns the steps routed and the one to send after the commit."""
    steps = route_event(session, inbox_id)
    following = steps[0] if steps else None
    if following is not None and unused(following, settings):
        following = skip_unused(session, inbox_id, settings)
    if following in DATABASE_STEPS:
        started.append(following)
        _, following = DATABASE_STEPS[following](session, inbox_id)
    return steps, following


@app.task(
    name="tasks.dispatch.process_events",
    bind=True,
    base=GatewayTask,
    carries_inbox_id=False,
    **DATABASE_TASK_LIMITS,
)
def process_events(self: GatewayTask, inbox_ids: list[int]) -> dict[str, int]:
    """process_event for several inbox rows in one task (the gateway's relay sends them so): one
    broker message, task start and transaction for many events.

    Should anything fail in the shared transaction, it is rolled back and each event runs on its
    own, in its own transaction; one that fails then goes on alone as process_event, with its own
    retries and dead letter, and does not hold up the rest. A batch delivered again (its worker died
    under it) or retried only sends each event on alone, so an event that kills its worker cannot
    take the others with it. While PostgreSQL does not answer, the batch waits for it as a whole,
    and after the wait (which uses no attempt) it runs whole.
    """
    if self.attempt > 1 or (self.request.delivery_info or {}).get("redelivered"):
        publish_process_events_singly(inbox_ids)
        log.warning("events.batch_split", count=len(inbox_ids))
        return {"processed": 0, "sent_alone": len(inbox_ids)}
    task_fields = structlog.contextvars.get_contextvars()
    try:
        if _process_together(inbox_ids, task_fields):
            return {"processed": len(inbox_ids), "sent_alone": 0}
        failed = _process_each(inbox_ids, task_fields)
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**task_fields)
    publish_process_events_singly(failed)
    return {"processed": len(inbox_ids) - len(failed), "sent_alone": len(failed)}


def _process_together(inbox_ids: list[int], task_fields: dict[str, Any]) -> bool:
    """Every event in one transaction: one BEGIN and one COMMIT for the batch instead of a pair per
    event, and the changes go out in one flush at commit, which groups the like statements of all
    the events. False, with nothing kept, when any event failed."""
    settings = runtime.settings()
    following: list[tuple[int, str | None]] = []
    try:
        with (
            session_scope(runtime.sessions()) as session,
            session.no_autoflush,
            audits_together(session),
        ):
            inbox.lock_all(session, inbox_ids)
            for inbox_id in inbox_ids:
                _bind_event(task_fields, inbox_id)
                following.append((inbox_id, _route_and_start(session, inbox_id, settings, [])[1]))
    except Exception as exc:
        log.warning(
            "events.batch_rolled_back",
            count=len(inbox_ids),
            exc_type=type(exc).__name__,
            error=str(exc)[:300],
        )
        if database_down(exc):  # the batch waits for the database whole, not event by event
            raise DatabaseUnreachableError(f"{type(exc).__name__}: {exc}"[:300]) from exc
        return False
    for inbox_id, step in following:
        send_step(inbox_id, step)
    return True


def _process_each(inbox_ids: list[int], task_fields: dict[str, Any]) -> list[int]:
    """Each event in a transaction of its own; returns those that failed."""
    failed: list[int] = []
    for inbox_id in inbox_ids:
        _bind_event(task_fields, inbox_id)
        try:
            process_event.run(inbox_id)
        except Exception as exc:
            log.warning("event.sent_alone", exc_type=type(exc).__name__, error=str(exc)[:300])
            failed.append(inbox_id)
    return failed


def _bind_event(task_fields: dict[str, Any], inbox_id: int) -> None:
    """Each event's lines name the task and that event (inbox.get binds more), no other event."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**task_fields, inbox_id=inbox_id)


def publish_process_events_singly(inbox_ids: list[int]) -> None:
    if inbox_ids:
        publish_each(app, inbox_ids)

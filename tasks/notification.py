"""Messages to people: operators' alerts about dead letters and payment trouble, each sent once."""

from __future__ import annotations

from collections import Counter
from contextlib import AbstractContextManager

from sqlalchemy import select, update

from schemas.db import session_scope
from schemas.stripe_events import Invoice, StripeEvent
from schemas.tables import DeadLetter, utcnow
from tasks import inbox
from tasks.clients import configured, not_configured
from tasks.clients.sendgrid import SendGridClient
from tasks.clients.slack import SlackClient
from tasks.dispatch import step_done
from tasks.members import member_for_event, membership_of
from tasks.membership_states import Status
from workers import runtime
from workers.base_task import ALERT_PENDING_KEY, PROVIDER_CALL_TASK_LIMITS, GatewayTask
from workers.celery_app import app
from workers.dead_letters import DeadLetterStatus
from workers.effects import once
from workers.errors import ConfigurationError
from workers.logging import get_logger

log = get_logger(__name__)
ALERT_LINES = 10
# A paid member is welcomed once, even if a later payment failure or cancellation got here first.
WELCOMED = frozenset({Status.ACTIVE, Status.PAST_DUE, Status.CANCEL_SCHEDULED})


def dead_letter_summary(rows: list[DeadLetter]) -> str:
    """One message for a whole storm: counts per task and error, largest first."""
    groups = Counter((row.task_name, row.exc_type.rsplit(".", 1)[-1]) for row in rows)
    lines = [f"{len(rows)} new dead letter(s); `hookfleet dlq list` to inspect and replay:"]
    lines += [
        f"• {count} x {task}: {error}" for (task, error), count in groups.most_common(ALERT_LINES)
    ]
    if len(groups) > ALERT_LINES:
        lines.append(f"• … and {len(groups) - ALERT_LINES} more groups")
    return "\n".join(lines)


class _NoInboxTask(GatewayTask):
    carries_inbox_id = False


@app.task(
    name="tasks.notification.alert_dead_letters", base=_NoInboxTask, **PROVIDER_CALL_TASK_LIMITS
)
def alert_dead_letters() -> int:
    # Cleared first, so a dead letter written while this runs schedules the next alert.
    runtime.redis().delete(ALERT_PENDING_KEY)
    if not configured("slack", runtime.settings()):
        not_configured("slack")  # the dead letters stay listed, unalerted, for `hookfleet dlq`
        return 0
    with session_scope(runtime.sessions()) as session:
        rows = list(
            session.scalars(
                select(DeadLetter)
                .where(DeadLetter.alerted_at.is_(None), DeadLetter.status == DeadLetterStatus.DEAD)
                .order_by(DeadLetter.id)
                .with_for_update(skip_locked=True)
            )
        )
        if not rows:
            return 0
        settings = runtime.settings()
        SlackClient(settings).post_message(
            settings.slack_operators_channel, dead_letter_summary(rows)
        )
        session.execute(
            update(DeadLetter)
            .where(DeadLetter.id.in_([row.id for row in rows]))
            .values(alerted_at=utcnow())
        )
    log.info("alert.sent", dead_letters=len(rows))
    return len(rows)


def _invoice(inbox_id: int) -> Invoice:
    with session_scope(runtime.sessions()) as session:
        event = StripeEvent.model_validate_json(inbox.get(session, inbox_id).body)
    return Invoice.model_validate(event.data.object)


def _once(key: str, inbox_id: int, task: GatewayTask) -> AbstractContextManager[bool]:
    return once(runtime.sessions(), key, task_id=task.request.id, inbox_id=inbox_id)


@app.task(
    name="tasks.notification.announce_payment_failed",
    base=GatewayTask,
    **PROVIDER_CALL_TASK_LIMITS,
)
def announce_payment_failed(inbox_id: int) -> str:
    """Tell the operators' channel once per invoice, however often the event is replayed."""
    invoice, settings = _invoice(inbox_id), runtime.settings()
    text = (
        f":warning: Payment failed for {invoice.customer_email or invoice.customer} "
        f"(invoice {invoice.id}); Stripe will retry the card."
    )
    if not configured("slack", settings):
        outcome = not_configured("slack")
    else:
        with _once(f"slack:payment_failed:{invoice.id}", inbox_id, announce_payment_failed) as go:
            if go:
                SlackClient(settings).post_message(settings.slack_operators_channel, text)
        outcome = "posted" if go else "already_posted"
    step_done(inbox_id, announce_payment_failed.name)
    return outcome


def _template(template_id: str | None, name: str) -> str:
    if not template_id:
        raise ConfigurationError(f"{name} is not set; the email cannot be sent")
    return template_id


@app.task(
    name="tasks.notification.email_payment_failed",
    base=GatewayTask,
    **PROVIDER_CALL_TASK_LIMITS,
)
def email_payment_failed(inbox_id: int) -> str:
    """One email to the member per failed invoice (Stripe retries the card; we do not re-send)."""
    invoice, settings = _invoice(inbox_id), runtime.settings()
    with session_scope(runtime.sessions()) as session:
        member = member_for_event(session, inbox.get(session, inbox_id))
        to_email = (member.email if member else None) or invoice.customer_email
        name = member.name if member else None
    if not configured("sendgrid", settings):
        outcome = not_configured("sendgrid")
    elif not to_email:
        outcome = "no_address"
    else:
        template = _template(
            settings.sendgrid_payment_failed_template_id, "SENDGRID_PAYMENT_FAILED_TEMPLATE_ID"
        )
        with _once(f"sendgrid:payment_failed:{invoice.id}", inbox_id, email_payment_failed) as go:
            if go:
                SendGridClient(settings).send_template(
                    to_email,
                    template,
                    {"first_name": (name or "").split(" ")[0], "invoice_id": invoice.id},
                    to_name=name,
                    custom_args={"hookfleet_invoice": invoice.id},
                )
        outcome = "sent" if go else "already_sent"
    step_done(inbox_id, email_payment_failed.name)
    return outcome


@app.task(
    name="tasks.notification.send_welcome_email",
    base=GatewayTask,
    **PROVIDER_CALL_TASK_LIMITS,
)
def send_welcome_email(inbox_id: int) -> str:
    """The welcome goes out once per member, once a checkout has made them a paying member."""
    settings = runtime.settings()
    with session_scope(runtime.sessions()) as session:
        member = member_for_event(session, inbox.get(session, inbox_id))
        membership = membership_of(session, member) if member else None
        recipient = None
        if member and member.email and membership and membership.status in WELCOMED:
            recipient = (member.id, member.email, member.name, membership.tier)
    if not configured("sendgrid", settings):
        outcome = not_configured("sendgrid")
    elif recipient is None:
        outcome = "not_active"
    else:
        member_id, to_email, name, tier = recipient
        template = _template(settings.sendgrid_welcome_template_id, "SENDGRID_WELCOME_TEMPLATE_ID")
        with _once(f"sendgrid:welcome:{member_id}", inbox_id, send_welcome_email) as go:
            if go:
                SendGridClient(settings).send_template(
                    to_email,
                    template,
                    {"first_name": (name or "").split(" ")[0], "tier": tier},
                    to_name=name,
                    custom_args={"hookfleet_member": str(member_id)},
                )
        outcome = "sent" if go else "already_sent"
    step_done(inbox_id, send_welcome_email.name)
    return outcome

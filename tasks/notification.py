"""Messages to people: operators' alerts about dead letters and payment trouble, each sent once."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select, update

from schemas.db import session_scope
from schemas.stripe_events import Invoice, StripeEvent
from schemas.tables import DeadLetter, utcnow
from tasks import inbox
from tasks.clients.slack import SlackClient
from workers import runtime
from workers.base_task import ALERT_PENDING_KEY, PROVIDER_CALL_TASK_LIMITS, GatewayTask
from workers.celery_app import app
from workers.dead_letters import DeadLetterStatus
from workers.effects import once
from workers.logging import get_logger

log = get_logger(__name__)
ALERT_LINES = 10


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


@app.task(
    name="tasks.notification.announce_payment_failed",
    base=GatewayTask,
    **PROVIDER_CALL_TASK_LIMITS,
)
def announce_payment_failed(inbox_id: int) -> str:
    """Tell the operators' channel once per invoice, however often the event is replayed."""
    with session_scope(runtime.sessions()) as session:
        invoice = Invoice.model_validate(
            StripeEvent.model_validate_json(inbox.get(session, inbox_id).body).data.object
        )
    settings = runtime.settings()
    text = (
        f":warning: Payment failed for {invoice.customer_email or invoice.customer} "
        f"(invoice {invoice.id}); Stripe will retry the card."
    )
    with once(
        runtime.sessions(),
        f"slack:payment_failed:{invoice.id}",
        task_id=announce_payment_failed.request.id,
        inbox_id=inbox_id,
    ) as go:
        if go:
            SlackClient(settings).post_message(settings.slack_operators_channel, text)
    with session_scope(runtime.sessions()) as session:
        inbox.finish(session, inbox_id, announce_payment_failed.name)
    return "posted" if go else "already_posted"

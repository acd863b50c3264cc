"""Luma approval (issue 6): pending RSVPs to upcoming events are approved for active members and
declined (or skipped, LUMA_NON_MEMBER_ACTION) for everyone else, twice a day.

Each page of pending guests costs one membership query (by lower-cased email) and one query for
the decisions already made. A decision is a `luma_decisions` row, unique per (event, guest); a
page's decisions are committed `started` before its status calls and marked `done` (with their
audit entries) once Luma has answered: a run that dies in between leaves `started` rows, and the
next run sends those same decisions again (setting a status twice is harmless at Luma) instead of
deciding anew; a `done` approval or decline is never made again, even if someone at Luma put the
guest back to pending.
A skipped guest stays pending at Luma and is looked at again on every run, so a member who becomes
active is approved then. A dry run makes the same decisions and only counts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from schemas.db import session_scope
from schemas.tables import LumaDecision, Member, Membership
from tasks.clients.luma import LumaClient, LumaEvent, LumaGuest
from tasks.clients.slack import SlackClient
from tasks.membership_states import Status
from workers import runtime
from workers.audit import audit
from workers.celery_app import app
from workers.errors import PermanentError
from workers.jobs import JobContext, JobSkipped, job_task_options, run_job
from workers.logging import get_logger
from workers.outbound_limits import OutboundLimiter

log = get_logger(__name__)
JOB = "luma-approval"
# A membership set to end at its period's end is still a membership until then.
ACTIVE_STATUSES = frozenset({Status.ACTIVE, Status.CANCEL_SCHEDULED})
# Better statuses first: when two member rows share an email but for case, the better one counts.
_RANK: dict[str, int] = {
    Status.ACTIVE: 0,
    Status.CANCEL_SCHEDULED: 1,
    Status.PAST_DUE: 2,
    Status.PENDING: 3,
    Status.CANCELED: 4,
}

Action = Literal["approve", "decline", "skip"]
LUMA_STATUS: dict[str, Literal["approved", "declined"]] = {
    "approve": "approved",
    "decline": "declined",
}
COUNT_OF: dict[str, str] = {"approve": "approved", "decline": "declined", "skip": "skipped"}


class State:
    STARTED = "started"  # committed before the call to Luma
    DONE = "done"
    ERROR = "error"  # Luma refused the call (4xx): looked at afresh on the next run


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


def decide(
    email: str, memberships: dict[str, str | None], *, non_member_action: Action
) -> Decision:
    """Approve active members (past_due is not active); the rest get the configured action, with
    the reason: no email, not a member, a member without a membership, or the membership's status."""
    if not email:
        return Decision(non_member_action, "no_email")
    if email not in memberships:
        return Decision(non_member_action, "not_a_member")
    status = memberships[email]
    if status is None:
        return Decision(non_member_action, "no_membership")
    if status in ACTIVE_STATUSES:
        return Decision("approve", "active_member")
    return Decision(non_member_action, f"membership_{status}")


def membership_by_email(session: Session, emails: set[str]) -> dict[str, str | None]:
    """Lower-cased email -> membership status (None: a member without a membership), in one query;
    emails of no member (or of anonymised members) are absent."""
    if not emails:
        return {}
    rows = session.execute(
        select(func.lower(Member.email), Membership.status)
        .outerjoin(Membership, Membership.member_id == Member.id)
        .where(func.lower(Member.email).in_(emails), Member.anonymised_at.is_(None))
    ).all()
    found: dict[str, str | None] = {}
    for email, status in rows:
        current = found.get(email)
        if email not in found or _better(status, current):
            found[email] = status
    return found


def _better(status: str | None, than: str | None) -> bool:
    if status is None:
        return False
    if than is None:
        return True
    return _RANK.get(status, 99) < _RANK.get(than, 99)


def _existing(session: Session, event_id: str, guest_ids: list[str]) -> dict[str, LumaDecision]:
    rows = session.scalars(
        select(LumaDecision).where(
            LumaDecision.event_id == event_id, LumaDecision.guest_id.in_(guest_ids)
        )
    )
    return {row.guest_id: row for row in rows}


def _write_decision(
    session: Session,
    context: JobContext,
    guest: LumaGuest,
    decision: Decision,
    state: str,
    prior: LumaDecision | None,
) -> int:
    """Insert or rewrite the guest's decision row in `state`; returns its id."""
    values: dict[str, Any] = {
        "email": guest.email.strip().lower(),
        "decision": decision.action,
        "reason": decision.reason,
        "state": state,
        "job_run_id": context.run_id,
        "error": None,
    }
    if prior is None:
        row = LumaDecision(event_id=guest.event_id, guest_id=guest.id, **values)
        session.add(row)
        session.flush()
        return row.id
    session.execute(update(LumaDecision).where(LumaDecision.id == prior.id).values(**values))
    return prior.id


def _audit_decision(
    session: Session,
    context: JobContext,
    event: LumaEvent,
    guest: LumaGuest,
    decision: Decision,
    **detail: Any,
) -> None:
    verb = {"approve": "approved", "decline": "declined", "skip": "skipped"}[decision.action]
    audit(
        session,
        actor=context.actor,
        action=f"luma.guest_{verb}",
        entity_type="luma_guest",
        entity_id=guest.id,
        email=guest.email.strip().lower(),
        event_id=event.id,
        event_name=event.name,
        reason=decision.reason,
        run_id=context.run_id,
        **detail,
    )


def settle_unconfirmed(context: JobContext, event: LumaEvent, pending: set[str]) -> None:
    """Decisions left `started` by a run that died after Luma took them: once the whole event has
    been listed and the guest is no longer pending there, the call went through; the decision is
    marked `done` and audited then (a guest still pending is sent the decision again instead)."""
    if context.dry_run:
        return
    with session_scope(context.sessions) as session:
        rows = [
            row
            for row in session.scalars(
                select(LumaDecision).where(
                    LumaDecision.event_id == event.id, LumaDecision.state == State.STARTED
                )
            )
            if row.guest_id not in pending
        ]
        for row in rows:
            row.state = State.DONE
            guest = LumaGuest(row.guest_id, event.id, row.email, "", "")
            decision = Decision(row.decision, row.reason)  # type: ignore[arg-type]
            _audit_decision(
                session, context, event, guest, decision, confirmed="no longer pending at Luma"
            )
    if rows:
        context.counts["confirmed"] += len(rows)


Item = tuple[LumaGuest, Decision, LumaDecision | None]


def _skip_page(context: JobContext, event: LumaEvent, items: list[Item]) -> None:
    """Record the page's skips (one transaction); an unchanged earlier skip is not audited again."""
    context.counts["skipped"] += len(items)
    fresh = [
        (guest, decision, prior)
        for guest, decision, prior in items
        if prior is None or prior.decision != "skip" or prior.reason != decision.reason
    ]
    if context.dry_run or not fresh:
        return
    with session_scope(context.sessions) as session:
        for guest, decision, prior in fresh:
            _write_decision(session, context, guest, decision, State.DONE, prior)
            _audit_decision(session, context, event, guest, decision)


def _apply_page(context: JobContext, luma: LumaClient, event: LumaEvent, items: list[Item]) -> None:
    """Approve or decline the page's guests at Luma.

    The decisions are committed `started` (one transaction) before the first call, so a run that
    dies during the calls resends these decisions, not new ones; what Luma answered is committed
    (`done` with its audit entry, or `error`) in one transaction when the page ends, or when a call
    fails for good and ends the run.
    """
    if context.dry_run:
        for _, decision, _ in items:
            context.counts[COUNT_OF[decision.action]] += 1
        return
    if not items:
        return
    with session_scope(context.sessions) as session:
        row_ids = [
            _write_decision(session, context, guest, decision, State.STARTED, prior)
            for guest, decision, prior in items
        ]
    done: list[tuple[int, LumaGuest, Decision]] = []
    refused: list[tuple[int, str]] = []
    try:
        for row_id, (guest, decision, _) in zip(row_ids, items, strict=True):
            try:
                luma.update_guest_status(
                    event.id,
                    guest.id,
                    LUMA_STATUS[decision.action],
                    send_email=context.settings.luma_send_status_email,
                )
            except PermanentError as exc:
                refused.append((row_id, str(exc)[:1000]))
                log.warning(
                    "luma.guest_not_updated",
                    event_id=event.id,
                    guest_id=guest.id,
                    error=str(exc)[:300],
                )
                continue
            done.append((row_id, guest, decision))
    finally:
        with session_scope(context.sessions) as session:
            if done:
                session.execute(
                    update(LumaDecision)
                    .where(LumaDecision.id.in_([row_id for row_id, _, _ in done]))
                    .values(state=State.DONE)
                )
            for row_id, error in refused:
                session.execute(
                    update(LumaDecision)
                    .where(LumaDecision.id == row_id)
                    .values(state=State.ERROR, error=error)
                )
            for _, guest, decision in done:
                _audit_decision(session, context, event, guest, decision)
        for _, _, decision in done:
            context.counts[COUNT_OF[decision.action]] += 1
        context.counts["errors"] += len(refused)


def decide_page(
    context: JobContext, luma: LumaClient, event: LumaEvent, guests: list[LumaGuest]
) -> None:
    """Decide one page of an event's pending guests (one membership query for the page)."""
    action: Action = context.settings.luma_non_member_action
    with session_scope(context.sessions) as session:
        statuses = membership_by_email(
            session, {guest.email.strip().lower() for guest in guests if guest.email}
        )
        existing = _existing(session, event.id, [guest.id for guest in guests])
    skips: list[Item] = []
    calls: list[Item] = []
    for guest in guests:
        context.counts["guests_seen"] += 1
        prior = existing.get(guest.id)
        if prior is not None and prior.state == State.DONE and prior.decision != "skip":
            context.counts["already_decided"] += 1
            continue
        if prior is not None and prior.state == State.STARTED:
            # A run stopped between writing this decision and hearing Luma's answer: send it again.
            decision = Decision(prior.decision, prior.reason)  # type: ignore[arg-type]
            context.counts["resumed"] += 1
        else:
            decision = decide(guest.email.strip().lower(), statuses, non_member_action=action)
        (skips if decision.action == "skip" else calls).append((guest, decision, prior))
    _skip_page(context, event, skips)
    _apply_page(context, luma, event, calls)


def summary_text(context: JobContext, outcome: str) -> str:
    counts = context.counts
    head = f"Luma approval {outcome}" + (" (dry run)" if context.dry_run else "")
    return (
        f"{head}: {counts['approved']} approved, {counts['declined']} declined, "
        f"{counts['skipped']} skipped, {counts['errors']} errors "
        f"({counts['guests_seen']} pending guests across {counts['events']} upcoming events)."
    )


def _post_summary(context: JobContext, text: str) -> None:
    """The operators' channel hears how the run went; a Slack problem never fails the run."""
    settings = context.settings
    if context.dry_run or settings.slack_bot_token is None:
        return
    try:
        SlackClient(settings).post_message(settings.slack_operators_channel, text)
    except Exception as exc:
        log.warning("luma.summary_not_posted", error=str(exc)[:300])
        return
    context.counts["summary_posted"] = 1


def run_luma_approval(context: JobContext) -> None:
    """The job body (see workers.jobs): every upcoming event's pending guests, page by page."""
    settings = context.settings
    if settings.luma_api_key is None:
        raise JobSkipped("LUMA_API_KEY is not set; Luma approval is disabled")
    for key in ("events", "guests_seen", "approved", "declined", "skipped", "errors"):
        context.counts[key] = 0
    limiter = OutboundLimiter(context.redis, "luma")
    with LumaClient(settings, limiter) as luma:
        try:
            events = list(luma.upcoming_events(datetime.now(UTC)))
            context.counts["events"] = len(events)
            for event in events:
                pending: set[str] = set()
                for guests in luma.pending_guests(event.id):
                    pending.update(guest.id for guest in guests)
                    decide_page(context, luma, event, guests)
                    context.counts["luma_calls"] = luma.calls
                    context.checkpoint()
                settle_unconfirmed(context, event, pending)
        except Exception as exc:
            context.counts["luma_calls"] = luma.calls
            _post_summary(context, f"{summary_text(context, 'failed')} Error: {str(exc)[:200]}")
            raise
        context.counts["luma_calls"] = luma.calls
    _post_summary(context, summary_text(context, "finished"))


@app.task(name="tasks.approval.luma_approval", **job_task_options(runtime.settings()))
def luma_approval(
    triggered_by: str = "beat", dry_run: bool = False, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    return run_job(JOB, dry_run=dry_run, triggered_by=triggered_by, options=options).as_dict()

"""Reading and advancing inbox rows from tasks; status only ever moves forward."""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from schemas.db import transaction_info
from schemas.tables import InboxStatus, WebhookEvent, utcnow
from workers.effects import handled, mark_handled, none_handled

DONE = frozenset({InboxStatus.PROCESSED, InboxStatus.IGNORED})
# transaction_info key: the rows this transaction has locked.
_LOCKED = "hookfleet.locked_inbox_rows"
# Statuses whose rows have no finished handlers: nothing has run yet, or a replay forgot them.
_NOTHING_FINISHED = frozenset({InboxStatus.RECEIVED, InboxStatus.ENQUEUED})
# Built once: Session.get(..., with_for_update=True) builds and keys its query on every call.
_LOCK = (
    select(WebhookEvent)
    .where(WebhookEvent.id == bindparam("inbox_id"))
    .with_for_update()
    .execution_options(populate_existing=True)
)
_LOCK_ALL = (
    select(WebhookEvent)
    .where(WebhookEvent.id.in_(bindparam("inbox_ids", expanding=True)))
    .order_by(WebhookEvent.id)
    .with_for_update()
    .execution_options(populate_existing=True)
)


class InboxRowMissingError(LookupError):
    """A task names an inbox row that does not exist: permanent, retrying cannot help."""


def get(session: Session, inbox_id: int, *, lock: bool = False) -> WebhookEvent:
    """The row (locked until the transaction ends when `lock`), named on every later log line."""
    row = _present(
        _locked_row(session, inbox_id) if lock else session.get(WebhookEvent, inbox_id), inbox_id
    )
    # Every later log line of this task names the event it works for.
    structlog.contextvars.bind_contextvars(
        inbox_id=inbox_id, provider=row.provider, event_id=row.event_id
    )
    return row


def lock(session: Session, inbox_id: int) -> WebhookEvent:
    """The row, locked until the transaction ends: sibling handlers of one event finish in turn."""
    return _present(_locked_row(session, inbox_id), inbox_id)


def _present(row: WebhookEvent | None, inbox_id: int) -> WebhookEvent:
    if row is None:
        raise InboxRowMissingError(f"webhook_events row {inbox_id} does not exist")
    return row


def lock_all(session: Session, inbox_ids: Sequence[int]) -> None:
    """Lock a batch's rows in one SELECT ... FOR UPDATE (in id order) instead of one per event: a
    round trip fewer for every event after the first. A missing row is reported when it is read."""
    rows = session.scalars(_LOCK_ALL, {"inbox_ids": sorted(inbox_ids)}).all()
    _hold(session, inbox_ids, rows)


def _locked_row(session: Session, inbox_id: int) -> WebhookEvent | None:
    """SELECT ... FOR UPDATE once per transaction: routing and the step after it share the lock."""
    if inbox_id in transaction_info(session, _LOCKED):
        return session.get(WebhookEvent, inbox_id)
    row = session.scalars(_LOCK, {"inbox_id": inbox_id}).one_or_none()
    _hold(session, [inbox_id], [] if row is None else [row])
    return row


def _hold(session: Session, inbox_ids: Sequence[int], rows: Sequence[WebhookEvent]) -> None:
    """Remember what this transaction has locked, and which rows have nothing finished yet. The
    rows are kept, as the session's identity map keeps an unchanged row only while it is referenced
    (else each event's read would go to PostgreSQL again)."""
    held = transaction_info(session, _LOCKED)
    held.update(dict.fromkeys(inbox_ids))
    for row in rows:
        held[row.id] = row
        if row.status in _NOTHING_FINISHED:
            none_handled(session, row.id)


def count_attempt(session: Session, inbox_id: int) -> None:
    """An attempt whose transaction was rolled back is still counted on the row."""
    session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == inbox_id)
        .values(attempts=WebhookEvent.attempts + 1)
    )


def record_finished(
    session: Session, row: WebhookEvent, task_names: Sequence[str], finished: int
) -> None:
    """Mark `task_names` finished on the locked `row`; `finished` counts every handler finished
    with them, and the event is processed when that reaches its handler count.

    A processed event is never resumed (a replay forgets its marks first), so the marks that
    finish it are not written: one INSERT fewer for every event whose last steps end together."""
    if finished >= row.handler_count:
        row.status, row.processed_at, row.last_error = InboxStatus.PROCESSED, utcnow(), None
    else:
        mark_handled(session, row.id, *task_names)


def finish(session: Session, inbox_id: int, task_name: str) -> None:
    """Record that one handler finished; the event is processed when all its handlers have."""
    row = lock(session, inbox_id)
    record_finished(
        session, row, [task_name], len(finished_handlers(session, inbox_id) | {task_name})
    )


def finished_handlers(session: Session, inbox_id: int) -> set[str]:
    """Read once per transaction for a row it holds locked (routing and the step share it)."""
    return handled(session, inbox_id, remember=inbox_id in transaction_info(session, _LOCKED))

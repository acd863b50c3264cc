"""Reading and advancing inbox rows from tasks; status only ever moves forward."""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from schemas.tables import Effect, InboxStatus, WebhookEvent, utcnow
from workers.effects import handled_key, mark_handled

DONE = frozenset({InboxStatus.PROCESSED, InboxStatus.IGNORED})
# session.info key: the rows this session's current transaction has locked.
_LOCKED = "hookfleet.locked_inbox_rows"


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


def _locked_row(session: Session, inbox_id: int) -> WebhookEvent | None:
    """SELECT ... FOR UPDATE once per transaction: routing and the step after it share the lock."""
    transaction = session.get_transaction()
    held: tuple[object, set[int]] | None = session.info.get(_LOCKED)
    if held is None or held[0] is not transaction:
        held = session.info[_LOCKED] = (transaction, set())
    if inbox_id in held[1]:
        return session.get(WebhookEvent, inbox_id)
    row = session.get(WebhookEvent, inbox_id, with_for_update=True)
    held[1].add(inbox_id)
    return row


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
    with them, and the event is processed when that reaches its handler count."""
    mark_handled(session, row.id, *task_names)
    if finished >= row.handler_count:
        row.status, row.processed_at, row.last_error = InboxStatus.PROCESSED, utcnow(), None


def finish(session: Session, inbox_id: int, task_name: str) -> None:
    """Record that one handler finished; the event is processed when all its handlers have."""
    row = lock(session, inbox_id)
    record_finished(
        session, row, [task_name], len(finished_handlers(session, inbox_id) | {task_name})
    )


def finished_handlers(session: Session, inbox_id: int) -> set[str]:
    prefix = handled_key(inbox_id, "")
    # By inbox_id first (indexed): a LIKE prefix cannot use the key's index under most collations.
    keys = session.scalars(
        select(Effect.key).where(Effect.inbox_id == inbox_id, Effect.key.startswith(prefix))
    )
    return {key.removeprefix(prefix) for key in keys}

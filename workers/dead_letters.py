"""The dead-letter store: what failed for good, and the operator's replay and discard.

The CLI, the admin API and the dead-letter page all call these functions, so each action is
validated and audited the same way whichever door it comes through.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from schemas.db import session_scope
from schemas.tables import DeadLetter, utcnow
from workers.audit import audit

# Message header that tells a task it is a replay of this dead letter (so its failure links back).
REPLAY_HEADER = "hookfleet_replay_of"


class DeadLetterStatus:
    DEAD = "dead"
    REPLAYED = "replayed"
    DISCARDED = "discarded"
    ALL = (DEAD, REPLAYED, DISCARDED)


class DeadLetterNotFoundError(LookupError):
    pass


class DeadLetterStateError(ValueError):
    """Only a `dead` row can be replayed or discarded; the others were already acted on."""


# Sends (task name, args, kwargs, headers, task id) to the broker and returns the task id.
SendTask = Callable[[str, list[Any], dict[str, Any], dict[str, Any], str], str]


def record(
    session: Session,
    *,
    task_name: str,
    task_id: str,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    queue: str | None,
    exc: BaseException,
    traceback: str | None,
    attempts: int,
    first_failed_at: datetime | None,
    inbox_id: int | None,
    replay_of_id: int | None,
) -> DeadLetter:
    now = utcnow()
    row = DeadLetter(
        task_name=task_name,
        task_id=task_id,
        args=list(args),
        kwargs=dict(kwargs),
        queue=queue,
        exc_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
        exc_message=str(exc)[:4000],
        traceback=traceback,
        attempts=attempts,
        first_failed_at=first_failed_at or now,
        last_failed_at=now,
        inbox_id=inbox_id,
        status=DeadLetterStatus.DEAD,
        replay_of_id=replay_of_id,
    )
    session.add(row)
    session.flush()
    return row


def query(
    session: Session,
    *,
    task: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    limit: int | None = 200,
) -> list[DeadLetter]:
    statement = select(DeadLetter).order_by(DeadLetter.id.desc())
    if task:
        statement = statement.where(DeadLetter.task_name == task)
    if status:
        statement = statement.where(DeadLetter.status == status)
    if since:
        statement = statement.where(DeadLetter.last_failed_at >= since)
    if limit:
        statement = statement.limit(limit)
    return list(session.scalars(statement))


def get(session: Session, dead_letter_id: int, *, lock: bool = False) -> DeadLetter:
    statement = select(DeadLetter).where(DeadLetter.id == dead_letter_id)
    row = session.scalar(statement.with_for_update() if lock else statement)
    if row is None:
        raise DeadLetterNotFoundError(f"dead letter {dead_letter_id} does not exist")
    return row


def _require_dead(row: DeadLetter) -> None:
    if row.status != DeadLetterStatus.DEAD:
        raise DeadLetterStateError(f"dead letter {row.id} is {row.status}, not dead")


def replay(
    sessions: sessionmaker[Session], dead_letter_id: int, *, send: SendTask, actor: str
) -> str:
    """Send the same task with the same arguments; the row becomes `replayed` with the new task id.

    The row is marked (under a task id chosen here) and committed before the send, so two operators
    cannot both replay it; a send that fails puts the row back to `dead`.
    """
    new_task_id = str(uuid4())
    with session_scope(sessions) as session:
        row = get(session, dead_letter_id, lock=True)
        _require_dead(row)
        row.status, row.replayed_task_id = DeadLetterStatus.REPLAYED, new_task_id
        task_name, args, kwargs = row.task_name, list(row.args), dict(row.kwargs)
        audit(
            session,
            actor=actor,
            action="dead_letter.replayed",
            entity_type="dead_letter",
            entity_id=row.id,
            inbox_id=row.inbox_id,
            task=task_name,
            new_task_id=new_task_id,
        )
    try:
        send(task_name, args, kwargs, {REPLAY_HEADER: dead_letter_id}, new_task_id)
    except Exception as exc:
        with session_scope(sessions) as session:
            row = get(session, dead_letter_id, lock=True)
            if row.replayed_task_id == new_task_id:
                row.status, row.replayed_task_id = DeadLetterStatus.DEAD, None
                audit(
                    session,
                    actor=actor,
                    action="dead_letter.replay_failed",
                    entity_type="dead_letter",
                    entity_id=row.id,
                    error=f"{type(exc).__name__}: {exc}"[:300],
                )
        raise
    return new_task_id


def discard(session: Session, dead_letter_id: int, *, reason: str, actor: str) -> None:
    """Keep the row, marked `discarded` with the operator's reason."""
    if not reason.strip():
        raise ValueError("a discard needs a reason")
    row = get(session, dead_letter_id, lock=True)
    _require_dead(row)
    row.status = DeadLetterStatus.DISCARDED
    row.discard_reason = reason
    audit(
        session,
        actor=actor,
        action="dead_letter.discarded",
        entity_type="dead_letter",
        entity_id=row.id,
        inbox_id=row.inbox_id,
        task=row.task_name,
        reason=reason,
    )


def as_dict(row: DeadLetter, *, full: bool = False) -> dict[str, Any]:
    """The JSON shape shared by the CLI's --json and the admin API."""
    data: dict[str, Any] = {
        "id": row.id,
        "task_name": row.task_name,
        "task_id": row.task_id,
        "status": row.status,
        "exc_type": row.exc_type,
        "exc_message": row.exc_message,
        "attempts": row.attempts,
        "first_failed_at": row.first_failed_at.isoformat(),
        "last_failed_at": row.last_failed_at.isoformat(),
        "inbox_id": row.inbox_id,
        "replay_of_id": row.replay_of_id,
        "replayed_task_id": row.replayed_task_id,
        "discard_reason": row.discard_reason,
    }
    if full:
        data.update(args=row.args, kwargs=row.kwargs, queue=row.queue, traceback=row.traceback)
    return data

"""Once-only side effects: an effect key is recorded before a non-idempotent call, so a retried,
replayed or redelivered task never repeats it (no second welcome email, no second Slack post).

The claim is committed before the call. A failed call releases it (the provider refused, so a retry
may try again); a worker killed mid-call leaves it `started`, and the effect is then not repeated:
for messages to people, once at most beats twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from schemas.db import insert_ignoring_conflicts, session_scope, transaction_info
from schemas.tables import Effect, utcnow
from workers.logging import get_logger

log = get_logger(__name__)


class EffectState:
    STARTED = "started"
    DONE = "done"


# transaction_info key: per inbox row, the handlers known to have finished, kept only for rows the
# transaction holds locked (no other transaction can mark them meanwhile) and updated by the marks.
_KNOWN_HANDLED = "hookfleet.known_handled"


def handled_key(inbox_id: int, task_name: str) -> str:
    """The marker a handler task leaves on its inbox event when it has finished."""
    return f"handled:{inbox_id}:{task_name}"


def handled(session: Session, inbox_id: int, *, remember: bool = False) -> set[str]:
    """The handlers marked finished for `inbox_id`; `remember` (the caller holds the row locked)
    keeps them for the rest of the transaction, so the step after routing need not read again."""
    known: dict[int, set[str]] = transaction_info(session, _KNOWN_HANDLED)
    if inbox_id in known:
        return set(known[inbox_id])
    prefix = handled_key(inbox_id, "")
    # By inbox_id first (indexed): a LIKE prefix cannot use the key's index under most collations.
    keys = session.scalars(
        select(Effect.key).where(Effect.inbox_id == inbox_id, Effect.key.startswith(prefix))
    )
    finished = {key.removeprefix(prefix) for key in keys}
    if remember:
        known[inbox_id] = set(finished)
    return finished


def none_handled(session: Session, inbox_id: int) -> None:
    """The caller holds the row locked and knows it has no marks (nothing has run on it yet)."""
    transaction_info(session, _KNOWN_HANDLED)[inbox_id] = set()


def _insert(session: Session, **values: Any) -> bool:
    dialect = session.get_bind().dialect.name
    result = session.execute(
        insert_ignoring_conflicts(dialect, Effect).values(**values).returning(Effect.key)
    )
    return result.scalar_one_or_none() is not None


@contextmanager
def once(
    sessions: sessionmaker[Session],
    key: str,
    *,
    task_id: str | None = None,
    inbox_id: int | None = None,
) -> Iterator[bool]:
    """Yield True when the caller should perform the effect now, False when it was done before.

    Usage: `with once(sessions, f"slack:payment_failed:{invoice}") as go: if go: post(...)`.
    """
    with session_scope(sessions) as session:
        claimed = _insert(
            session,
            key=key,
            state=EffectState.STARTED,
            task_id=task_id,
            inbox_id=inbox_id,
            started_at=utcnow(),
            result={},
        )
        if not claimed:
            state = session.scalar(select(Effect.state).where(Effect.key == key))
    if not claimed:
        log.info("effect.skipped", effect=key, state=state)
        yield False
        return
    try:
        yield True
    except BaseException:
        with session_scope(sessions) as session:
            session.execute(delete(Effect).where(Effect.key == key))
        raise
    with session_scope(sessions) as session:
        session.execute(
            update(Effect).where(Effect.key == key).values(state=EffectState.DONE, done_at=utcnow())
        )


def mark_handled(session: Session, inbox_id: int, *task_names: str) -> None:
    """Record that `task_names` finished for `inbox_id`, in one statement (a repeat is a no-op)."""
    if not task_names:
        return
    known = transaction_info(session, _KNOWN_HANDLED).get(inbox_id)
    if known is not None:
        known.update(task_names)
    now = utcnow()
    dialect = session.get_bind().dialect.name
    # A list of parameter sets, not .values([...]): the statement is compiled once and cached.
    session.execute(
        insert_ignoring_conflicts(dialect, Effect),
        [
            {
                "key": handled_key(inbox_id, name),
                "state": EffectState.DONE,
                "inbox_id": inbox_id,
                "started_at": now,
                "done_at": now,
                "result": {},
            }
            for name in task_names
        ],
    )


def forget_handled(session: Session, inbox_id: int) -> None:
    """Before an inbox event is processed again, its handlers must count as not yet finished."""
    transaction_info(session, _KNOWN_HANDLED).pop(inbox_id, None)
    session.execute(
        delete(Effect).where(Effect.inbox_id == inbox_id, Effect.key.startswith("handled:"))
    )

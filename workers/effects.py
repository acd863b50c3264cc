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

from schemas.db import insert_ignoring_conflicts, session_scope
from schemas.tables import Effect, utcnow
from workers.logging import get_logger

log = get_logger(__name__)


class EffectState:
    STARTED = "started"
    DONE = "done"


def handled_key(inbox_id: int, task_name: str) -> str:
    """The marker a handler task leaves on its inbox event when it has finished."""
    return f"handled:{inbox_id}:{task_name}"


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
    session.execute(
        delete(Effect).where(Effect.inbox_id == inbox_id, Effect.key.startswith("handled:"))
    )

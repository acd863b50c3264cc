"""The audit trail: one row for every operator action and every automated decision worth explaining."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from schemas.tables import AuditEntry


def audit(
    session: Session,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str | int,
    inbox_id: int | None = None,
    **detail: Any,
) -> None:
    # One INSERT now, in the caller's transaction; no ORM object to track and flush (an audit row
    # is never changed), and a compiled statement cached for every call.
    session.execute(
        insert(AuditEntry),
        {
            "actor": actor,
            "action": action,
            "entity_type": entity_type,
            "entity_id": str(entity_id),
            "inbox_id": inbox_id,
            "detail": detail,
        },
    )

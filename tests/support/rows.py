"""Reading back what the fleet committed, for tests that watch it from outside."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from schemas.tables import DeadLetter


def dead_letters(engine: Engine, **where: Any) -> list[DeadLetter]:
    """Dead letters whose columns equal `where`, oldest first."""
    with Session(engine) as session:
        query = select(DeadLetter).order_by(DeadLetter.id)
        for column, value in where.items():
            query = query.where(getattr(DeadLetter, column) == value)
        return list(session.scalars(query))

"""What the dead-letter page reads: the filters, the groups (task x error type, with counts), the
rows of a filter, and what surrounds one row (its webhook, its replays, its audit trail).

Only reads live here. Every change (replay, discard) goes through `workers.dead_letters`, which the
CLI and the admin API call too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVarTuple

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from schemas.tables import AuditEntry, DeadLetter, WebhookEvent
from workers.dead_letters import DeadLetterStatus

# The page's "within" choices: label -> how far back.
WINDOWS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
STATUSES = (*DeadLetterStatus.ALL, "any")
PAGE_ROWS = 200
# A group replay confirms, and then replays, at most this many rows at once.
MAX_GROUP_REPLAY = 1000


@dataclass(frozen=True)
class Filters:
    task: str = ""
    exc_type: str = ""
    status: str = DeadLetterStatus.DEAD  # or "any"
    within: str = ""  # a key of WINDOWS, or "" for any time

    @classmethod
    def parse(cls, params: Any) -> Filters:
        """From query or form fields; unknown values fall back to the defaults."""
        status = str(params.get("status") or DeadLetterStatus.DEAD)
        within = str(params.get("within") or "")
        return cls(
            task=str(params.get("task") or "").strip(),
            exc_type=str(params.get("exc_type") or "").strip(),
            status=status if status in STATUSES else DeadLetterStatus.DEAD,
            within=within if within in WINDOWS else "",
        )

    def since(self, now: datetime) -> datetime | None:
        return now - WINDOWS[self.within] if self.within else None

    def params(self, **changes: str) -> dict[str, str]:
        """The non-default fields as query parameters (for links that keep the filter)."""
        values = {
            "task": self.task,
            "exc_type": self.exc_type,
            "status": self.status,
            "within": self.within,
            **changes,
        }
        return {name: value for name, value in values.items() if value}

    def only_dead(self) -> Filters:
        return Filters(self.task, self.exc_type, DeadLetterStatus.DEAD, self.within)

    def describe(self) -> str:
        parts = [f"status {self.status}"]
        if self.task:
            parts.append(f"task {self.task}")
        if self.exc_type:
            parts.append(f"error {self.exc_type}")
        if self.within:
            parts.append(f"last failed within {self.within}")
        return ", ".join(parts)


Columns = TypeVarTuple("Columns")


def _where(statement: Select[*Columns], filters: Filters, now: datetime) -> Select[*Columns]:
    if filters.task:
        statement = statement.where(DeadLetter.task_name == filters.task)
    if filters.exc_type:
        statement = statement.where(DeadLetter.exc_type == filters.exc_type)
    if filters.status != "any":
        statement = statement.where(DeadLetter.status == filters.status)
    since = filters.since(now)
    if since is not None:
        statement = statement.where(DeadLetter.last_failed_at >= since)
    return statement


@dataclass(frozen=True)
class Group:
    task_name: str
    exc_type: str
    count: int
    last_failed_at: datetime


def groups(session: Session, filters: Filters, now: datetime) -> list[Group]:
    """Task x error type under the filter, the biggest first."""
    count = func.count().label("count")
    statement = _where(
        select(
            DeadLetter.task_name, DeadLetter.exc_type, count, func.max(DeadLetter.last_failed_at)
        ).group_by(DeadLetter.task_name, DeadLetter.exc_type),
        filters,
        now,
    ).order_by(count.desc(), DeadLetter.task_name, DeadLetter.exc_type)
    return [Group(*row) for row in session.execute(statement)]


def rows(
    session: Session, filters: Filters, now: datetime, *, limit: int = PAGE_ROWS
) -> list[DeadLetter]:
    statement = _where(select(DeadLetter), filters, now).order_by(DeadLetter.id.desc())
    return list(session.scalars(statement.limit(limit)))


def count(session: Session, filters: Filters, now: datetime) -> int:
    statement = _where(select(func.count()).select_from(DeadLetter), filters, now)
    return int(session.scalar(statement) or 0)


def dead_ids(session: Session, filters: Filters, now: datetime) -> list[int]:
    """The ids a group replay of this filter would send, oldest first, at most MAX_GROUP_REPLAY."""
    statement = _where(select(DeadLetter.id), filters.only_dead(), now)
    return list(session.scalars(statement.order_by(DeadLetter.id).limit(MAX_GROUP_REPLAY)))


def task_names(session: Session) -> list[str]:
    return list(session.scalars(select(DeadLetter.task_name).distinct().order_by("task_name")))


@dataclass(frozen=True)
class Surroundings:
    webhook: WebhookEvent | None
    replays: list[DeadLetter]
    history: list[AuditEntry]


def surroundings(session: Session, row: DeadLetter) -> Surroundings:
    """The webhook the task came from, the dead letters its replays left, and its audit rows."""
    webhook = session.get(WebhookEvent, row.inbox_id) if row.inbox_id is not None else None
    replays = session.scalars(
        select(DeadLetter).where(DeadLetter.replay_of_id == row.id).order_by(DeadLetter.id)
    )
    history = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.entity_type == "dead_letter", AuditEntry.entity_id == str(row.id))
        .order_by(AuditEntry.id)
    )
    return Surroundings(webhook=webhook, replays=list(replays), history=list(history))

"""Committed rows for the admin API's and pages' tests, and recorders in place of the broker.

Rows are named per test so tests never see each other's, and deleted afterwards.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import Engine, delete, or_, select
from sqlalchemy.orm import sessionmaker

from schemas.db import session_scope
from schemas.tables import ApiKey, AuditEntry, DeadLetter, Effect, InboxStatus, WebhookEvent
from workers import api_keys

API = "/admin/api"
ALL_SCOPES = ",".join(api_keys.SCOPES)


class SentTasks:
    """Records dead-letter replays instead of sending them; `broker_up=False` makes sending fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any], dict[str, Any], dict[str, Any]]] = []
        self.task_ids: list[str] = []
        self.broker_up = True

    def __call__(
        self,
        name: str,
        args: list[Any],
        kwargs: dict[str, Any],
        headers: dict[str, Any],
        task_id: str,
    ) -> str:
        if not self.broker_up:
            raise ConnectionError("broker unreachable")
        self.calls.append((name, args, kwargs, headers))
        self.task_ids.append(task_id)
        return task_id


class SentJobs:
    """Records the job tasks the gateway sends instead of sending them; `broker_up=False` makes
    sending fail."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], str]] = []
        self.broker_up = True

    def __call__(self, task: str, kwargs: dict[str, Any], queue: str) -> str:
        if not self.broker_up:
            raise ConnectionError("broker unreachable")
        self.sent.append((task, kwargs, queue))
        return f"task-{len(self.sent)}"


def job_queued(job: str, task_id: str, *, dry_run: bool) -> dict[str, Any]:
    """The 202 answer of both routes that queue a job."""
    return {"job": job, "task_id": task_id, "dry_run": dry_run, "status": "queued"}


class Published:
    """Records inbox replays instead of publishing them; `broker_up=False` makes publishing fail."""

    def __init__(self) -> None:
        self.inbox_ids: list[int] = []
        self.broker_up = True

    def __call__(self, inbox_id: int) -> str:
        if not self.broker_up:
            raise ConnectionError("broker unreachable")
        self.inbox_ids.append(inbox_id)
        return f"process-event-{inbox_id}"


async def no_enqueue(inbox_id: int) -> bool:
    raise AssertionError("the admin API and pages must not use the ingest enqueue")


class World:
    """Seeds committed rows for one test and removes them (and what the API wrote about them) after."""

    def __init__(self, engine: Engine) -> None:
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self.tag = secrets.token_hex(4)
        self.key_ids: list[int] = []
        self.dead_letter_ids: list[int] = []
        self.inbox_ids: list[int] = []

    def key(self, scopes: str = ALL_SCOPES, *, rate_per_minute: int = 600) -> tuple[str, str]:
        """A new key's (name, plaintext)."""
        name = f"test-{self.tag}-{len(self.key_ids)}"
        with session_scope(self.sessions) as session:
            row, plaintext = api_keys.create_key(
                session,
                name=name,
                scopes=scopes,
                rate_per_minute=rate_per_minute,
                actor="test",
            )
            self.key_ids.append(row.id)
        return name, plaintext

    def auth(self, scopes: str = ALL_SCOPES, *, rate_per_minute: int = 600) -> dict[str, str]:
        _, plaintext = self.key(scopes, rate_per_minute=rate_per_minute)
        return {"Authorization": f"Bearer {plaintext}"}

    @property
    def task_name(self) -> str:
        return f"tasks.test.flaky_{self.tag}"

    def dead_letter(self, *, task_name: str | None = None, status: str = "dead") -> DeadLetter:
        with session_scope(self.sessions) as session:
            row = DeadLetter(
                task_name=task_name or self.task_name,
                task_id=f"task-{secrets.token_hex(6)}",
                args=[42, "cus_Test"],
                kwargs={"email": "ada@example.com"},
                queue="lifecycle",
                exc_type="workers.errors.PermanentError",
                exc_message="Stripe said no",
                traceback='Traceback (most recent call last):\n  File "x.py"\nPermanentError',
                attempts=4,
                status=status,
            )
            session.add(row)
            session.flush()
            self.dead_letter_ids.append(row.id)
        return row

    @property
    def event_type(self) -> str:
        return f"test.event_{self.tag}"

    def event(self, *, status: str = InboxStatus.PROCESSED) -> WebhookEvent:
        with session_scope(self.sessions) as session:
            row = WebhookEvent(
                provider="stripe",
                event_id=f"evt_{secrets.token_hex(8)}",
                event_type=self.event_type,
                body=b'{"id": "evt_admin", "type": "invoice.paid"}',
                headers={"Stripe-Signature": "t=1,v1=abc"},
                status=status,
            )
            session.add(row)
            session.flush()
            self.inbox_ids.append(row.id)
        return row

    def reload_dead_letter(self, dead_letter_id: int) -> DeadLetter:
        with self.sessions() as session:
            row = session.get(DeadLetter, dead_letter_id)
            assert row is not None
            return row

    def reload_event(self, inbox_id: int) -> WebhookEvent:
        with self.sessions() as session:
            row = session.get(WebhookEvent, inbox_id)
            assert row is not None
            return row

    def audit(self, action: str, entity_id: int) -> list[AuditEntry]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(AuditEntry).where(
                        AuditEntry.action == action, AuditEntry.entity_id == str(entity_id)
                    )
                )
            )

    def clean(self) -> None:
        with session_scope(self.sessions) as session:
            entities = or_(
                AuditEntry.inbox_id.in_(self.inbox_ids),
                (AuditEntry.entity_type == "dead_letter")
                & AuditEntry.entity_id.in_([str(i) for i in self.dead_letter_ids]),
                (AuditEntry.entity_type == "webhook_event")
                & AuditEntry.entity_id.in_([str(i) for i in self.inbox_ids]),
                (AuditEntry.entity_type == "api_key")
                & AuditEntry.entity_id.in_([str(i) for i in self.key_ids]),
                # Jobs started by this test's keys, through the API (api:) or the pages (web:).
                (AuditEntry.entity_type == "job") & AuditEntry.actor.like(f"%:test-{self.tag}-%"),
            )
            session.execute(delete(AuditEntry).where(entities))
            session.execute(delete(Effect).where(Effect.inbox_id.in_(self.inbox_ids)))
            session.execute(delete(DeadLetter).where(DeadLetter.id.in_(self.dead_letter_ids)))
            session.execute(delete(WebhookEvent).where(WebhookEvent.id.in_(self.inbox_ids)))
            session.execute(delete(ApiKey).where(ApiKey.id.in_(self.key_ids)))

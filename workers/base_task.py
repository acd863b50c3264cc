"""The base task: a failure is written onto the originating inbox row and logged, never lost silently."""

from __future__ import annotations

from typing import Any

from celery import Task
from sqlalchemy import update

from schemas.db import session_scope
from schemas.tables import InboxStatus, WebhookEvent
from workers import runtime
from workers.logging import get_logger

log = get_logger(__name__)
MAX_ERROR_CHARS = 2000


class GatewayTask(Task):  # type: ignore[misc]
    """Tasks take the inbox id as their first argument, so a failure can be traced to its event."""

    acks_late = True
    reject_on_worker_lost = True

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        inbox_id = kwargs.get("inbox_id", args[0] if args else None)
        log.error(
            "task.failed", inbox_id=inbox_id, exc_type=type(exc).__name__, error=str(exc)[:500]
        )
        if isinstance(inbox_id, int):
            with session_scope(runtime.sessions()) as session:
                session.execute(
                    update(WebhookEvent)
                    .where(WebhookEvent.id == inbox_id)
                    .values(
                        status=InboxStatus.FAILED,
                        last_error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS],
                    )
                )

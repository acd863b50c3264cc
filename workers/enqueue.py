"""Hand a committed inbox row to the broker: the one publish used by the gateway and the sweep."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery

PROCESS_EVENT = "tasks.dispatch.process_event"
# One quick retry covers a broker restart; longer outages are the sweep's job, not the request's.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0.1, "interval_step": 0.2}


def publish_process_event(app: Celery, inbox_id: int) -> str:
    """Send `process_event(inbox_id)`; return the task id. Raises when the broker is unreachable."""
    result = app.send_task(
        PROCESS_EVENT, args=[inbox_id], retry=True, retry_policy=PUBLISH_RETRY_POLICY
    )
    return str(result.id)


def task_sender(
    app: Celery,
) -> Callable[[str, list[Any], dict[str, Any], dict[str, Any], str], str]:
    """Dead-letter replays: the same task by name and task id, failing fast when the broker is gone."""

    def send(
        name: str, args: list[Any], kwargs: dict[str, Any], headers: dict[str, Any], task_id: str
    ) -> str:
        result = app.send_task(
            name,
            args=args,
            kwargs=kwargs,
            headers=headers,
            task_id=task_id,
            retry=True,
            retry_policy=PUBLISH_RETRY_POLICY,
        )
        return str(result.id)

    return send

"""Hand committed inbox rows to the broker: the gateway's relay (in batches) and the sweep."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from celery import Celery

from workers.logging import get_logger

log = get_logger(__name__)

PROCESS_EVENT = "tasks.dispatch.process_event"
# One quick retry covers a broker restart; longer outages are the sweep's job, not the request's.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0.1, "interval_step": 0.2}
# Redis commands buffered before kombu flushes a publish batch (two per message: LPUSH, event).
PIPELINE_COMMANDS = 1024


def publish_process_event(app: Celery, inbox_id: int) -> str:
    """Send `process_event(inbox_id)`; return the task id. Raises when the broker is unreachable."""
    result = app.send_task(
        PROCESS_EVENT, args=[inbox_id], retry=True, retry_policy=PUBLISH_RETRY_POLICY
    )
    return str(result.id)


def publish_process_events(app: Celery, inbox_ids: Sequence[int]) -> list[int]:
    """Publish `process_event` for each id in one Redis pipeline; return the ids the broker took.

    kombu's Producer.batch buffers the LPUSH (and the task-sent event) of every message and sends
    them in one round trip. A failed flush leaves delivery uncertain, so it reports none published:
    the rows stay `received` and the sweep publishes them again, which processing tolerates.
    """
    try:
        with app.producer_or_acquire() as producer, producer.batch(max_size=PIPELINE_COMMANDS):
            for inbox_id in inbox_ids:
                app.send_task(PROCESS_EVENT, args=[inbox_id], producer=producer)
    except Exception as exc:
        log.warning("relay.publish_failed", exc_type=type(exc).__name__, error=str(exc)[:200])
        return []
    return list(inbox_ids)


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

"""The gateway's side of the broker: publish off the event loop, and never fail a stored delivery."""

from __future__ import annotations

import anyio
from celery import Celery

from webhooks_gateway.ingest import Enqueue
from workers.enqueue import publish_process_event
from workers.logging import get_logger

log = get_logger(__name__)


def celery_enqueue(app: Celery, timeout_seconds: float) -> Enqueue:
    async def enqueue(inbox_id: int) -> bool:
        try:
            with anyio.fail_after(timeout_seconds):
                task_id = await anyio.to_thread.run_sync(
                    publish_process_event, app, inbox_id, abandon_on_cancel=True
                )
        except Exception as exc:
            # The row is committed as `received`; the inbox sweep publishes it once the broker is back.
            log.warning("webhook.enqueue_failed", exc_type=type(exc).__name__, error=str(exc)[:200])
            return False
        log.info("webhook.enqueued", celery_task_id=task_id)
        return True

    return enqueue

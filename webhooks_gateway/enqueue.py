"""The gateway's side of the broker: the relay publishes in a worker thread, never on the event loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import anyio
from celery import Celery

from webhooks_gateway.relay import PublishBatch
from workers.enqueue import publish_process_events
from workers.logging import get_logger

log = get_logger(__name__)

# Publishes process_event(inbox_id) for one row; returns whether the broker took it (tests pass one).
Enqueue = Callable[[int], Awaitable[bool]]


def celery_publisher(app: Celery, timeout_seconds: float) -> PublishBatch:
    async def publish(inbox_ids: Sequence[int]) -> Sequence[int]:
        try:
            with anyio.fail_after(timeout_seconds):
                published = await anyio.to_thread.run_sync(
                    publish_process_events, app, inbox_ids, abandon_on_cancel=True
                )
        except Exception as exc:
            # The rows are committed as `received`; the inbox sweep publishes them once the broker
            # is back (and again if this thread did get some through: processing is idempotent).
            log.warning("relay.publish_timeout", count=len(inbox_ids), exc_type=type(exc).__name__)
            return []
        log.info("relay.published", count=len(published))
        return published

    return publish


def one_by_one(enqueue: Enqueue) -> PublishBatch:
    """A per-row publisher (as tests record them) used as the relay's batch publisher."""

    async def publish(inbox_ids: Sequence[int]) -> Sequence[int]:
        return [inbox_id for inbox_id in inbox_ids if await enqueue(inbox_id)]

    return publish

"""Hand committed inbox rows to the broker: the gateway's relay (in batches) and the sweep."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from celery import Celery

from workers.logging import get_logger

log = get_logger(__name__)

PROCESS_EVENT = "tasks.dispatch.process_event"
PROCESS_EVENTS = "tasks.dispatch.process_events"
# Rows per process_events message: the relay's publish cost and the worker's per-task overhead are
# shared by this many events, while a burst still spreads over the worker processes. A message
# costs the relay's thread about 260 us to publish: at 32 rows instead of 16 the gateway's threads
# other than the event loop used 18-24 instead of 30-35 us of CPU per webhook under wrk (four
# interleaved runs each). At 300 webhooks/s a relay batch holds about 16 rows either way.
EVENTS_PER_MESSAGE = 32
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


def publish_process_events(
    app: Celery, inbox_ids: Sequence[int], *, queue: str | None = None
) -> list[int]:
    """Publish `process_events` for the ids, up to EVENTS_PER_MESSAGE per message, in one Redis
    pipeline, on `queue` (None: the task's route); return the ids the broker took.

    A Celery publish costs far more than the work it carries here, so one message moves several
    rows; they are spread evenly over the messages so that every worker process gets a share.
    A failed flush leaves delivery uncertain, so it reports none published: the rows stay
    `received` and the sweep publishes them again, which processing tolerates.
    """
    try:
        _in_one_pipeline(
            app, PROCESS_EVENTS, spread(list(inbox_ids), EVENTS_PER_MESSAGE), queue=queue
        )
    except Exception as exc:
        log.warning("relay.publish_failed", exc_type=type(exc).__name__, error=str(exc)[:200])
        return []
    return list(inbox_ids)


def publish_each(app: Celery, inbox_ids: Sequence[int]) -> None:
    """One `process_event` message per id, in one round trip; raises if the broker refuses."""
    _in_one_pipeline(app, PROCESS_EVENT, list(inbox_ids))


def _in_one_pipeline(
    app: Celery, task_name: str, first_args: Sequence[Any], *, queue: str | None = None
) -> None:
    """kombu's Producer.batch buffers each message's LPUSH (and its task-sent event) and sends
    them in one round trip."""
    limit = app.amqp.argsrepr_maxsize
    with app.producer_or_acquire() as producer, producer.batch(max_size=PIPELINE_COMMANDS):
        for arg in first_args:
            args = [arg]
            argsrepr = repr(args)
            app.send_task(
                task_name,
                args=args,
                producer=producer,
                queue=queue,
                # The args as Flower shows them: Celery's saferepr took 20 us for 16 ids, the
                # built-in repr 1.2 us for the same text. A longer text is saferepr's to shorten.
                argsrepr=argsrepr if len(argsrepr) <= limit else None,
            )


def spread(items: list[int], most: int) -> list[list[int]]:
    """`items` in order, cut into the fewest chunks of at most `most`, of sizes differing by one."""
    if not items:
        return []
    count = -(-len(items) // most)
    size, extra = divmod(len(items), count)
    chunks, start = [], 0
    for index in range(count):
        end = start + size + (index < extra)
        chunks.append(items[start:end])
        start = end
    return chunks


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

"""The relay: committed inbox rows go to the broker in batches, off the request path.

A delivery is acknowledged once its row is committed (see inbox_writer); publishing
`process_event(inbox_id)` then happens here, many rows per trip to a worker thread and one UPDATE
marking them `enqueued`. The request never waits on the broker, and the event loop never blocks on
it. Nothing acknowledged depends on this module: a row it has not published yet, because the broker
is down, the backlog is over its bound or the gateway died, stays `received`, and the inbox sweep
(workers.maintenance) publishes `received` rows older than INBOX_RECEIVED_STALE_SECONDS. A row the
sweep and the relay both publish is processed once: process_event is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy import BigInteger, ColumnElement, Update, any_, bindparam, case, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.tables import InboxStatus, WebhookEvent, utcnow
from webhooks_gateway.kept_connection import KeptConnection
from workers.logging import get_logger

log = get_logger(__name__)

# Publishes process_event for each id; returns the ids the broker took.
PublishBatch = Callable[[Sequence[int]], Awaitable[Sequence[int]]]
MAX_BATCH = 256
# Beyond this many unpublished ids in memory the relay leaves new ones to the sweep.
MAX_PENDING = 50_000
# A shutdown waits this long for the queued ids to be published; the sweep has the rest.
STOP_GRACE_SECONDS = 5.0
# Before a batch that is not full the relay waits this long for more ids: at a moderate rate a
# batch would otherwise carry one or two rows, and each batch pays a publish, a mark, a worker's
# task overhead and the wake-ups of all three. Measured at 300 webhooks/s: batches of 1-2 rows
# with no linger, 4-6 with 10 ms and about 17 with 50 ms; end to end, CPU per event (gateway,
# workers and PostgreSQL together) fell from 10.8 ms at 10 ms to 9.3 ms at 50 ms. An event waits
# up to 50 ms longer.
LINGER_SECONDS = 0.05


class Relay:
    def __init__(
        self,
        engine: AsyncEngine,
        publish: PublishBatch,
        *,
        max_batch: int = MAX_BATCH,
        max_pending: int = MAX_PENDING,
        stop_grace_seconds: float = STOP_GRACE_SECONDS,
        linger_seconds: float = LINGER_SECONDS,
    ) -> None:
        # The mark's best plan depends on the batch and the inbox's size: a generic plan, made
        # once and kept by the prepared statement, read the whole inbox on every batch when it was
        # made on the statistics of an emptied table (seen in the bench).
        self._kept = KeptConnection(engine, custom_plans=True)
        self._mark = _mark_statement(engine.dialect.name)
        self._linger_seconds = linger_seconds
        self._publish = publish
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._stop_grace_seconds = stop_grace_seconds
        self._pending: list[int] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def add(self, inbox_ids: Sequence[int]) -> None:
        """Queue committed rows for publishing; never blocks, never raises."""
        if len(self._pending) + len(inbox_ids) > self._max_pending:
            log.warning("relay.backlog_full", left_to_sweep=len(inbox_ids))
            return
        self._pending.extend(inbox_ids)
        self._idle.clear()
        self._wake.set()

    async def start(self) -> None:
        self._wake, self._idle = asyncio.Event(), asyncio.Event()
        self._idle.set()
        if self._pending:
            self._idle.clear()
            self._wake.set()
        self._task = asyncio.create_task(self._run())

    async def drained(self) -> None:
        """Wait until every id added so far has been offered to the broker."""
        await self._idle.wait()

    async def stop(self) -> None:
        """Publish what is queued (a clean shutdown leaves nothing to the sweep), then stop.

        With the broker gone that could take long: after the grace period the rest stays `received`.
        """
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self.drained(), self._stop_grace_seconds)
        except TimeoutError:
            log.warning("relay.stopped_with_backlog", left_to_sweep=len(self._pending))
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        await self._kept.close()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                if self._linger_seconds and len(self._pending) < self._max_batch:
                    await asyncio.sleep(self._linger_seconds)
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                try:
                    await self._relay(batch)
                except Exception as exc:  # the rows stay `received`: the sweep has them
                    log.warning("relay.failed", count=len(batch), exc_type=type(exc).__name__)
            self._idle.set()

    async def _relay(self, batch: list[int]) -> None:
        published = list(await self._publish(batch))
        if len(published) < len(batch):
            log.warning("relay.unpublished", count=len(batch) - len(published))
        if published:
            await self._mark_enqueued(published)

    async def _mark_enqueued(self, inbox_ids: list[int]) -> None:
        try:
            # One statement, its own transaction: one round trip.
            await self._kept.execute(self._mark, {"ids": inbox_ids, "now": utcnow()})
        except (SQLAlchemyError, OSError) as exc:
            # Published already; the sweep may publish them again, which processing tolerates.
            log.warning("relay.mark_enqueued_failed", exc_type=type(exc).__name__)


def _mark_statement(dialect_name: str) -> Update:
    """Mark published rows `enqueued`. A worker may have taken the message and moved the row on
    already: its status stays, but when it went to the broker is recorded all the same. A row a
    worker holds locked right now is skipped (the worker records the time instead): waiting on it
    would stall the relay, and the rows this UPDATE had locked would stall the other workers."""
    free = (
        select(WebhookEvent.id)
        .where(_id_in_batch(dialect_name), WebhookEvent.enqueued_at.is_(None))
        .with_for_update(skip_locked=True)
    )
    return (
        update(WebhookEvent)
        .where(WebhookEvent.id.in_(free))
        .values(
            status=case(
                (WebhookEvent.status == InboxStatus.RECEIVED, InboxStatus.ENQUEUED),
                else_=WebhookEvent.status,
            ),
            enqueued_at=bindparam("now"),
        )
    )


def _id_in_batch(dialect_name: str) -> ColumnElement[bool]:
    """PostgreSQL gets the ids as one array, so the statement's text is the same for every batch
    size: an IN list has new text per size, which psycopg prepares afresh each time."""
    if dialect_name == "postgresql":
        return WebhookEvent.id == any_(bindparam("ids", type_=ARRAY(BigInteger)))
    return WebhookEvent.id.in_(bindparam("ids", expanding=True))

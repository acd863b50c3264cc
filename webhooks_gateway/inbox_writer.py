"""Group commit for the inbox: the rows of concurrent deliveries go to the database in one transaction.

One INSERT ... ON CONFLICT DO NOTHING per request, each in its own transaction, made the database
round trip and commit the gateway's ceiling. Here requests hand their rows to a writer task; it takes
every row waiting at that moment, inserts them in one transaction and only then resolves each
request's future. So an acknowledgement still means "this row is committed", a duplicate (same
provider and event id, in the table or earlier in the same batch) still comes back as a duplicate,
and a failed transaction fails every request in it, which answer 503 and are retried by their
provider. A row the database refuses on its own (bad data rather than a lost connection) is
retried alone, so it cannot fail the deliveries that happened to share its batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from binascii import b2a_base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.db import insert_ignoring_conflicts
from schemas.tables import InboxStatus, WebhookEvent, utcnow
from webhooks_gateway.kept_connection import KeptConnection
from workers.logging import get_logger

log = get_logger(__name__)

# Rows per transaction: enough to absorb a burst, small enough that one commit stays quick.
MAX_BATCH_ROWS = 256
# One writer task: the rows that arrive while its commit is in flight make up its next batch. A
# second writer would take them at once, in more and smaller transactions. Measured open loop at
# 2,000 webhooks/s (half of wrk's peak), six runs each: gateway CPU per request 0.333-0.339 against
# 0.354-0.371 ms, PostgreSQL's 0.131-0.135 against 0.162-0.166 ms, ack p99 12.5-98 (median 27) against
# 18.8-79 (median 66) ms. Under wrk's closed loop, with its larger batches, no difference.


class InboxUnavailableError(Exception):
    """The batch holding the delivery's rows was not committed: nothing of it is stored."""


@dataclass(frozen=True)
class InboxRow:
    provider: str
    event_id: str
    event_type: str
    body: bytes
    headers: dict[str, str]

    @property
    def key(self) -> tuple[str, str]:
        return (self.provider, self.event_id)


@dataclass
class _Pending:
    rows: Sequence[InboxRow]
    done: asyncio.Future[list[int | None]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class InboxWriter:
    """`write(rows)` returns each row's new inbox id, or None for a duplicate, once committed."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        on_commit: Callable[[list[int]], None] = lambda ids: None,
        max_batch_rows: int = MAX_BATCH_ROWS,
    ) -> None:
        self._engine = engine
        self._on_commit = on_commit
        self._max_batch_rows = max_batch_rows
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self._postgres = engine.dialect.name == "postgresql"
        self._statement = insert_ignoring_conflicts(engine.dialect.name, WebhookEvent).returning(
            WebhookEvent.id, WebhookEvent.provider, WebhookEvent.event_id
        )

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Commit what is already waiting, then stop the writer task."""
        if self._queue is not None:
            await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def write(self, rows: Sequence[InboxRow]) -> list[int | None]:
        """Raises InboxUnavailableError when the rows could not be committed."""
        if self._queue is None:
            raise InboxUnavailableError("the inbox writer is not running")
        pending = _Pending(rows)
        # A request cancelled as its batch failed never reads its answer; mark the answer as read.
        pending.done.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._queue.put_nowait(pending)
        # A request cancelled here cancels only its own future: the commit, which other requests
        # share, is the writer task's, and it skips answering a future that is done.
        return await pending.done

    async def _run(self) -> None:
        assert self._queue is not None
        kept = KeptConnection(self._engine)
        try:
            while True:
                batch = [await self._queue.get()]
                size = len(batch[0].rows)
                while size < self._max_batch_rows and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    size += len(batch[-1].rows)
                try:
                    await self._commit(batch, kept)
                except BaseException as exc:
                    # Never leave a request waiting for an answer that will not come.
                    _fail(batch, exc)
                    if not isinstance(exc, Exception):
                        raise
                finally:
                    for _ in batch:
                        self._queue.task_done()
        finally:
            await kept.close()

    async def _commit(self, batch: list[_Pending], kept: KeptConnection) -> None:
        try:
            inserted = await self._insert([row for pending in batch for row in pending.rows], kept)
        except (IntegrityError, DataError) as exc:
            if len(batch) == 1:
                _fail(batch, exc)
                return
            # One delivery's rows the database refuses; the others must not share its fate.
            log.warning("inbox.batch_refused", deliveries=len(batch), exc_type=type(exc).__name__)
            for pending in batch:
                await self._commit([pending], kept)
            return
        except (SQLAlchemyError, OSError) as exc:
            _fail(batch, exc)
            return
        claimed: set[tuple[str, str]] = set()
        for pending in batch:
            ids: list[int | None] = []
            for row in pending.rows:
                # The first claim on a key in this batch gets the new row; any other is a duplicate.
                new = row.key in inserted and row.key not in claimed
                claimed.add(row.key)
                ids.append(inserted[row.key] if new else None)
            if not pending.done.done():
                pending.done.set_result(ids)

    async def _insert(
        self, rows: list[InboxRow], kept: KeptConnection
    ) -> dict[tuple[str, str], int]:
        now = utcnow()
        first_of_key: dict[tuple[str, str], InboxRow] = {}
        for row in rows:
            first_of_key.setdefault(row.key, row)
        unique = list(first_of_key.values())
        if self._postgres:
            returned = await kept.execute(_PG_INSERT, _pg_params(unique, now))
        else:
            returned = await kept.execute(
                self._statement, [_row_params(row, now) for row in unique]
            )
        inserted = {(provider, event_id): inbox_id for inbox_id, provider, event_id in returned}
        if inserted:
            self._on_commit(sorted(inserted.values()))
        return inserted


# PostgreSQL: one statement whose text never changes, the batch passed as one JSON document (bodies
# in hex, so that any bytes go through). A multi-row VALUES has new text for every batch size, which
# SQLAlchemy compiles and psycopg parses afresh (measured at about a third of the gateway's CPU per
# request); five arrays cost psycopg about 24 us of CPU per row to dump, the JSON document about 6 us.
# PostgreSQL's CPU per batch of 8 or 32 rows is the same either way; with one row per batch (open
# loop at 2,000/s) it was 0.16 against 0.14 ms per request, where the gateway saved 0.015-0.03 ms.
# Base64 rather than hex: PostgreSQL's CPU per 2.5 KB Stripe row, batches of 32, went from 75-108 to
# 58-60 us (its JSON parse and decode of a body twice the size had been most of a row's cost).
_PG_INSERT = text(
    """
    INSERT INTO webhook_events
        (provider, event_id, event_type, body, headers, status, attempts, handler_count,
         received_at)
    SELECT provider, event_id, event_type, decode(body_b64, 'base64'), headers, :status, 0, 0,
        :received_at
    FROM json_to_recordset(CAST(:rows AS json))
        AS batch(provider text, event_id text, event_type text, body_b64 text, headers jsonb)
    ON CONFLICT (provider, event_id) DO NOTHING
    RETURNING id, provider, event_id
    """
)


def _pg_params(rows: list[InboxRow], now: datetime) -> dict[str, Any]:
    batch = [
        {
            "provider": row.provider,
            "event_id": row.event_id,
            "event_type": row.event_type,
            "body_b64": b2a_base64(row.body, newline=False).decode(),
            "headers": row.headers,
        }
        for row in rows
    ]
    return {
        "rows": orjson.dumps(batch).decode(),
        "status": InboxStatus.RECEIVED,
        "received_at": now,
    }


def _row_params(row: InboxRow, now: datetime) -> dict[str, Any]:
    return {
        "provider": row.provider,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "body": row.body,
        "headers": row.headers,
        "status": InboxStatus.RECEIVED,
        "attempts": 0,
        "handler_count": 0,
        "received_at": now,
    }


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    log.error("webhook.inbox_unavailable", deliveries=len(batch), exc_type=type(exc).__name__)
    for pending in batch:
        if not pending.done.done():
            pending.done.set_exception(InboxUnavailableError(type(exc).__name__))

"""Cross-system sync: an Airtable ping fetches its webhook's payloads, from the stored cursor, into the inbox.

Airtable's notification names only the base and the webhook; the changes themselves are listed with
`GET /v0/bases/{baseId}/webhooks/{webhookId}/payloads?cursor=N`, in transaction order, from the cursor
we keep per webhook (`airtable_cursors`). Each payload becomes its own inbox row (provider `airtable`,
type `airtable.payload`, id `<webhookId>:<baseTransactionNumber>`, body the payload's JSON), stored for
the sync work that reads it; no task runs on it yet, so dispatch marks it ignored.

Idempotent, and safe with two pings of one webhook handled at once: each page is fetched and stored in
one transaction that holds the webhook's cursor row FOR UPDATE, rows are inserted ON CONFLICT DO
NOTHING, and the cursor advances in the same commit as the rows it covers. A second run for the same
ping starts from the advanced cursor and stores nothing new.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from schemas.db import insert_ignoring_conflicts, session_scope
from schemas.tables import AirtableCursor, InboxStatus, WebhookEvent, utcnow
from tasks import inbox
from tasks.clients.airtable import AirtableClient
from workers import runtime
from workers.base_task import PROVIDER_CALL_TASK_LIMITS, GatewayTask
from workers.celery_app import app
from workers.enqueue import publish_process_event
from workers.errors import PermanentError
from workers.logging import get_logger

log = get_logger(__name__)

PROVIDER = "airtable"
PING = "airtable.ping"
PAYLOAD = "airtable.payload"
FIRST_CURSOR = 1
# Pages one run fetches before handing the rest to a fresh task (the time limits stay honest: 50 pages
# at Airtable's 5 requests per second is about 10 s of pacing).
MAX_PAGES_PER_RUN = 50

OnStored = Callable[[list[int]], None]


@dataclass(frozen=True)
class Ping:
    """What a stored notification ping names: the webhook whose payloads to list, and its base."""

    base_id: str
    webhook_id: str


@dataclass(frozen=True)
class StoredPage:
    new_ids: list[int]  # inbox ids of this page's payloads that were new to the inbox
    cursor_before: int
    cursor_after: int
    might_have_more: bool

    @property
    def advanced(self) -> bool:
        return self.cursor_after > self.cursor_before


@dataclass(frozen=True)
class FetchOutcome:
    stored: tuple[int, ...]  # inbox ids of the payloads new to the inbox
    pages: int
    cursor: int  # the webhook's cursor after this run
    drained: bool  # False: MAX_PAGES_PER_RUN was reached with more to list


def read_ping(row: WebhookEvent) -> Ping:
    if (row.provider, row.event_type) != (PROVIDER, PING):
        raise PermanentError(f"inbox row {row.id} is {row.provider}/{row.event_type}, not a ping")
    try:
        data = json.loads(row.body)
        base_id, webhook_id = data["base"]["id"], data["webhook"]["id"]
    except (ValueError, TypeError, KeyError) as exc:
        raise PermanentError(f"inbox row {row.id} is not an Airtable ping") from exc
    if not isinstance(base_id, str) or not isinstance(webhook_id, str):
        raise PermanentError(f"inbox row {row.id} names no base or webhook id")
    return Ping(base_id=base_id, webhook_id=webhook_id)


def locked_cursor(session: Session, ping: Ping) -> AirtableCursor:
    """The webhook's cursor row, created at the first payload on first use, locked until commit."""
    dialect = session.get_bind().dialect.name
    session.execute(
        insert_ignoring_conflicts(dialect, AirtableCursor).values(
            webhook_id=ping.webhook_id,
            base_id=ping.base_id,
            cursor=FIRST_CURSOR,
            updated_at=utcnow(),
        )
    )
    query = (
        select(AirtableCursor)
        .where(AirtableCursor.webhook_id == ping.webhook_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return session.scalars(query).one()


def payload_event_id(webhook_id: str, position: int) -> str:
    """`<webhookId>:cursor-<position>`: the cursor position is unique per webhook and Airtable never
    renumbers it, while one transaction (`baseTransactionNumber`) may span several payloads."""
    return f"{webhook_id}:cursor-{position}"


def store_page(session: Session, client: AirtableClient, ping: Ping) -> StoredPage:
    """Fetch the page at the stored cursor, store its payloads and advance the cursor past them."""
    cursor = locked_cursor(session, ping)
    start = cursor.cursor
    page = client.list_webhook_payloads(ping.base_id, ping.webhook_id, cursor=start)
    dialect = session.get_bind().dialect.name
    now = utcnow()
    new_ids: list[int] = []
    for offset, payload in enumerate(page.payloads):
        inserted = session.execute(
            insert_ignoring_conflicts(dialect, WebhookEvent)
            .values(
                provider=PROVIDER,
                event_id=payload_event_id(ping.webhook_id, start + offset),
                event_type=PAYLOAD,
                body=json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode(),
                headers={},
                status=InboxStatus.RECEIVED,
                attempts=0,
                handler_count=0,
                received_at=now,
            )
            .returning(WebhookEvent.id)
        ).scalar_one_or_none()
        if inserted is not None:
            new_ids.append(inserted)
    # Never backwards: a cursor Airtable answers below ours would list stored payloads again.
    if page.cursor > start:
        cursor.cursor = page.cursor
    return StoredPage(new_ids, start, cursor.cursor, page.might_have_more)


def fetch_payloads(
    sessions: sessionmaker[Session],
    client: AirtableClient,
    inbox_id: int,
    *,
    task_name: str,
    on_stored: OnStored | None = None,
    max_pages: int = MAX_PAGES_PER_RUN,
) -> FetchOutcome:
    """List the ping's webhook from its cursor while Airtable says there might be more.

    One transaction per page, so a failure (a 429, say) keeps the pages already stored and the retry
    resumes after them. `on_stored` gets each page's new inbox ids after its commit. The ping is
    finished in the same commit as the last page.
    """
    if max_pages < 1:
        raise ValueError("max_pages must be at least 1")
    with session_scope(sessions) as session:
        ping = read_ping(inbox.get(session, inbox_id))
    stored: list[int] = []
    for pages in range(1, max_pages + 1):
        with session_scope(sessions) as session:
            page = store_page(session, client, ping)
            # A page that did not move the cursor has nothing after it, whatever mightHaveMore says.
            drained = not (page.might_have_more and page.advanced)
            if drained:
                inbox.finish(session, inbox_id, task_name)
        stored += page.new_ids
        log.info(
            "airtable.payloads_page",
            stored=len(page.new_ids),
            cursor=page.cursor_after,
            more=not drained,
        )
        if page.new_ids and on_stored is not None:
            on_stored(page.new_ids)
        if drained:
            return FetchOutcome(tuple(stored), pages, page.cursor_after, drained=True)
    return FetchOutcome(tuple(stored), max_pages, page.cursor_after, drained=False)


def publish_stored(inbox_ids: list[int]) -> None:
    """Hand new payload rows to dispatch, as the gateway does; rows left `received` are swept later."""
    published: list[int] = []
    for inbox_id in inbox_ids:
        try:
            publish_process_event(app, inbox_id)
        except Exception as exc:  # the broker is away: the inbox sweep publishes `received` rows
            log.warning("airtable.payload_publish_failed", exc_type=type(exc).__name__)
            break
        published.append(inbox_id)
    if not published:
        return
    with session_scope(runtime.sessions()) as session:
        session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id.in_(published), WebhookEvent.status == InboxStatus.RECEIVED)
            .values(status=InboxStatus.ENQUEUED, enqueued_at=utcnow())
        )


@app.task(name="tasks.sync.fetch_airtable_payloads", base=GatewayTask, **PROVIDER_CALL_TASK_LIMITS)
def fetch_airtable_payloads(inbox_id: int) -> dict[str, Any]:
    outcome = fetch_payloads(
        runtime.sessions(),
        AirtableClient(runtime.settings()),
        inbox_id,
        task_name=fetch_airtable_payloads.name,
        on_stored=publish_stored,
    )
    if not outcome.drained:
        # A backlog longer than one run: a fresh task carries on from the stored cursor.
        fetch_airtable_payloads.apply_async(args=[inbox_id])
    return {
        "stored": len(outcome.stored),
        "pages": outcome.pages,
        "cursor": outcome.cursor,
        "drained": outcome.drained,
    }

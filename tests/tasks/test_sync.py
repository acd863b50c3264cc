"""fetch_airtable_payloads as a plain function: real PostgreSQL, the real sandbox over HTTP as Airtable."""

from __future__ import annotations

import json
import secrets
import threading
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from schemas.settings import Settings
from schemas.tables import AirtableCursor, InboxStatus, WebhookEvent
from tasks.clients.airtable import AirtableClient
from tasks.dispatch import route_event
from tasks.sync import (
    PAYLOAD,
    FetchOutcome,
    fetch_airtable_payloads,
    fetch_payloads,
    payload_event_id,
    read_ping,
)
from tests.support.sandbox import SandboxServer
from workers.celery_app import app
from workers.errors import ConfigurationError, PermanentError, TransientError

TASK = fetch_airtable_payloads.name
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def airtable_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(ALPHABET) for _ in range(14))


pytestmark = pytest.mark.usefixtures("fresh_sandbox")


@pytest.fixture
def sessions(pg_engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(pg_engine, expire_on_commit=False)


def airtable_settings(sandbox: SandboxServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "airtable_api_key": SecretStr("patHookfleetTest.0123456789abcdef"),
        "airtable_api_base": f"{sandbox.url}/airtable",
        **overrides,
    }
    return Settings(_env_file=None, **values)


@pytest.fixture
def client(sandbox: SandboxServer) -> AirtableClient:
    return AirtableClient(airtable_settings(sandbox))


class Webhook:
    """One Airtable webhook of this test's own: payloads seeded in the sandbox, pings in the inbox."""

    def __init__(self, sandbox: SandboxServer, sessions: sessionmaker[Session]) -> None:
        self.sandbox = sandbox
        self.sessions = sessions
        self.base_id = airtable_id("app")
        self.webhook_id = airtable_id("ach")
        self.seeded = 0
        self.pings = 0

    def seed(self, count: int, *, page_size: int = 2) -> list[dict[str, Any]]:
        payloads = [self.payload(self.seeded + n) for n in range(1, count + 1)]
        self.seeded += count
        response = httpx.post(
            f"{self.sandbox.url}/_sandbox/airtable/payloads",
            json={
                "base_id": self.base_id,
                "webhook_id": self.webhook_id,
                "payloads": payloads,
                "page_size": page_size,
            },
            timeout=5,
        )
        response.raise_for_status()
        return payloads

    @staticmethod
    def payload(number: int) -> dict[str, Any]:
        return {
            "timestamp": f"2025-11-03T16:{number // 60:02d}:{number % 60:02d}.000Z",
            "baseTransactionNumber": 500 + number,
            "payloadFormat": "v0",
            "actionMetadata": {"source": "publicApi", "sourceMetadata": {}},
            "changedTablesById": {
                "tblMembers0000001": {
                    "createdRecordsById": {
                        f"rec{number:014d}": {
                            "createdTime": "2025-11-03T16:00:00.000Z",
                            "cellValuesByFieldId": {"fldEmail000000001": f"m{number}@example.org"},
                        }
                    }
                }
            },
        }

    def ping(self) -> int:
        """Store a ping as dispatch leaves it (dispatched to its one task); return its inbox id."""
        self.pings += 1
        body = {
            "base": {"id": self.base_id},
            "webhook": {"id": self.webhook_id},
            "timestamp": f"2025-11-03T17:00:{self.pings:02d}.000Z",
        }
        with self.sessions.begin() as session:
            row = WebhookEvent(
                provider="airtable",
                event_id=f"{self.webhook_id}:{body['timestamp']}",
                event_type="airtable.ping",
                body=json.dumps(body).encode(),
                status=InboxStatus.DISPATCHED,
                handler_count=1,
            )
            session.add(row)
            session.flush()
            return row.id

    def event_id(self, number: int) -> str:
        """Payload `number` (1-based) sits at cursor position `number`."""
        return f"{self.webhook_id}:cursor-{number}"

    def stored(self) -> list[WebhookEvent]:
        with self.sessions() as session:
            query = (
                select(WebhookEvent)
                .where(
                    WebhookEvent.provider == "airtable",
                    WebhookEvent.event_id.startswith(f"{self.webhook_id}:"),
                    WebhookEvent.event_type == PAYLOAD,
                )
                .order_by(WebhookEvent.id)
            )
            return list(session.scalars(query))

    def cursor(self) -> int | None:
        with self.sessions() as session:
            row = session.get(AirtableCursor, self.webhook_id)
            return row.cursor if row else None

    def status(self, inbox_id: int) -> str:
        with self.sessions() as session:
            row = session.get(WebhookEvent, inbox_id)
            assert row is not None
            return row.status

    def cursors_asked(self) -> list[int]:
        return [
            int(call["query"].get("cursor", 1))
            for call in self.sandbox.calls("airtable", "list-webhook-payloads")
            if call["path"].get("webhook_id") == self.webhook_id
        ]


@pytest.fixture
def webhook(sandbox: SandboxServer, sessions: sessionmaker[Session]) -> Webhook:
    return Webhook(sandbox, sessions)


def run(
    sessions: sessionmaker[Session], client: AirtableClient, inbox_id: int, **kwargs: Any
) -> FetchOutcome:
    return fetch_payloads(sessions, client, inbox_id, task_name=TASK, **kwargs)


def test_a_ping_stores_each_payload_as_its_own_row_and_advances_the_cursor(
    webhook: Webhook, sessions: sessionmaker[Session], client: AirtableClient
) -> None:
    payloads = webhook.seed(5)
    ping = webhook.ping()

    outcome = run(sessions, client, ping)

    assert (len(outcome.stored), outcome.pages, outcome.cursor, outcome.drained) == (5, 3, 6, True)
    rows = webhook.stored()
    assert [row.event_id for row in rows] == [webhook.event_id(n) for n in range(1, 6)]
    assert [json.loads(row.body) for row in rows] == payloads
    assert {(row.event_type, row.status) for row in rows} == {(PAYLOAD, InboxStatus.RECEIVED)}
    assert webhook.cursor() == 6
    assert webhook.cursors_asked() == [1, 3, 5]
    assert webhook.status(ping) == InboxStatus.PROCESSED


def test_a_second_run_for_the_same_ping_stores_nothing_new(
    webhook: Webhook, sessions: sessionmaker[Session], client: AirtableClient
) -> None:
    webhook.seed(3)
    ping = webhook.ping()
    run(sessions, client, ping)

    again = run(sessions, client, ping)

    assert (again.stored, again.cursor, again.drained) == ((), 4, True)
    assert len(webhook.stored()) == 3
    assert webhook.cursors_asked() == [1, 3, 4]


def test_a_later_ping_lists_only_what_came_after_the_cursor(
    webhook: Webhook, sessions: sessionmaker[Session], client: AirtableClient
) -> None:
    webhook.seed(3)
    run(sessions, client, webhook.ping())
    webhook.seed(2)

    later = run(sessions, client, webhook.ping())

    assert len(later.stored) == 2
    assert [row.event_id for row in webhook.stored()][-2:] == [
        webhook.event_id(4),
        webhook.event_id(5),
    ]
    assert webhook.cursors_asked()[-1] == 4
    assert webhook.cursor() == 6


def test_stored_payloads_are_handed_over_after_each_page_commits(
    webhook: Webhook, sessions: sessionmaker[Session], client: AirtableClient
) -> None:
    webhook.seed(3)
    handed: list[list[int]] = []

    def visible_then_record(inbox_ids: list[int]) -> None:
        with sessions() as session:  # committed: another connection sees the rows
            assert all(session.get(WebhookEvent, inbox_id) for inbox_id in inbox_ids)
        handed.append(inbox_ids)

    outcome = run(sessions, client, webhook.ping(), on_stored=visible_then_record)

    assert [len(ids) for ids in handed] == [2, 1]
    assert tuple(i for ids in handed for i in ids) == outcome.stored


def test_a_429_mid_way_keeps_the_pages_stored_and_the_retry_resumes_after_them(
    webhook: Webhook, sessions: sessionmaker[Session], client: AirtableClient
) -> None:
    webhook.seed(5)
    ping = webhook.ping()

    def rate_limited_from_now(_: list[int]) -> None:
        webhook.sandbox.fault("airtable", "list-webhook-payloads", status=429, retry_after=7)

    with pytest.raises(TransientError) as caught:
        run(sessions, client, ping, on_stored=rate_limited_from_now)

    assert caught.value.retry_after == 7.0
    assert len(webhook.stored()) == 2
    assert webhook.cursor() == 3
    assert webhook.status(ping) == InboxStatus.DISPATCHED

    retried = run(sessions, client, ping)

    assert len(retried.stored) == 3
    assert [row.event_id for row in webhook.stored()] == [webhook.event_id(n) for n in range(1, 6)]
    assert webhook.status(ping) == InboxStatus.PROCESSED


def test_going_over_airtables_rate_limit_raises_transient_error_to_wait_30_seconds(
    webhook: Webhook, sessions: sessionmaker[Session], client: AirtableClient
) -> None:
    webhook.seed(1)
    url = (
        f"{webhook.sandbox.url}/airtable/v0/bases/{webhook.base_id}"
        f"/webhooks/{webhook.webhook_id}/payloads"
    )
    token = {"Authorization": "Bearer patSomeoneElse.0"}
    # Another process spends the base's 5 requests a second and goes over: the base is in
    # Airtable's 30 s penalty, whatever the time between these calls and ours.
    answers = [httpx.get(url, headers=token, timeout=5).status_code for _ in range(6)]
    while answers[-1] != 429 and len(answers) < 50:
        answers.append(httpx.get(url, headers=token, timeout=5).status_code)
    assert answers[-1] == 429

    with pytest.raises(TransientError) as caught:
        run(sessions, client, webhook.ping())

    assert caught.value.retry_after == 30.0
    assert "429" in str(caught.value)
    assert webhook.stored() == []
    assert webhook.cursor() is None


def test_two_pings_of_one_webhook_at_once_list_each_page_once(
    webhook: Webhook, sessions: sessionmaker[Session], client: AirtableClient
) -> None:
    webhook.seed(6)
    pings = [webhook.ping(), webhook.ping()]
    outcomes: list[FetchOutcome] = []
    errors: list[BaseException] = []

    def fetch(inbox_id: int) -> None:
        try:
            outcomes.append(run(sessions, client, inbox_id))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fetch, args=(ping,)) for ping in pings]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert sorted(len(outcome.stored) for outcome in outcomes) in ([0, 6], [2, 4])
    assert len(webhook.stored()) == 6
    asked = webhook.cursors_asked()
    assert sorted(cursor for cursor in asked if cursor < 7) == [1, 3, 5]
    assert {webhook.status(ping) for ping in pings} == {InboxStatus.PROCESSED}


def test_a_webhook_airtable_does_not_know_is_a_permanent_error(
    webhook: Webhook, sessions: sessionmaker[Session], client: AirtableClient
) -> None:
    with pytest.raises(PermanentError) as caught:
        run(sessions, client, webhook.ping())

    assert not isinstance(caught.value, TransientError)
    assert "404" in str(caught.value)
    assert webhook.cursor() is None


def test_without_an_api_key_nothing_is_called_and_the_error_is_configuration(
    webhook: Webhook, sessions: sessionmaker[Session], sandbox: SandboxServer
) -> None:
    webhook.seed(1)

    with pytest.raises(ConfigurationError):
        run(
            sessions,
            AirtableClient(airtable_settings(sandbox, airtable_api_key=None)),
            webhook.ping(),
        )

    assert webhook.cursors_asked() == []


def test_a_run_capped_by_max_pages_leaves_the_ping_open_for_the_next_run(
    webhook: Webhook, sessions: sessionmaker[Session], client: AirtableClient
) -> None:
    webhook.seed(5)
    ping = webhook.ping()

    first = run(sessions, client, ping, max_pages=1)
    rest = run(sessions, client, ping)

    assert (len(first.stored), first.cursor, first.drained) == (2, 3, False)
    assert (len(rest.stored), rest.cursor, rest.drained) == (3, 6, True)
    assert webhook.status(ping) == InboxStatus.PROCESSED


def test_only_a_stored_airtable_ping_can_start_a_fetch(db_session: Session) -> None:
    row = WebhookEvent(
        provider="stripe", event_id="evt_NotAPing", event_type="invoice.paid", body=b"{}"
    )

    with pytest.raises(PermanentError):
        read_ping(row)


def test_payloads_are_keyed_by_their_cursor_position() -> None:
    assert payload_event_id("achX", 7) == "achX:cursor-7"
    assert payload_event_id("achX", 8) == "achX:cursor-8"


def test_a_ping_is_routed_to_the_fetch_on_the_sync_queue_and_a_payload_to_nothing(
    db_session: Session,
) -> None:
    rows = [
        WebhookEvent(
            provider="airtable",
            event_id=f"{airtable_id('ach')}:{event_type}",
            event_type=event_type,
            body=b"{}",
            status=InboxStatus.ENQUEUED,
        )
        for event_type in ("airtable.ping", PAYLOAD)
    ]
    db_session.add_all(rows)
    db_session.flush()

    assert route_event(db_session, rows[0].id) == (TASK,)
    assert route_event(db_session, rows[1].id) == ()
    assert rows[1].status == InboxStatus.IGNORED
    assert app.amqp.router.route({}, TASK)["queue"].name == "sync"

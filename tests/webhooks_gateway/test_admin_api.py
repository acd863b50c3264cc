"""The admin API mounted in the gateway, on the run's PostgreSQL database and the real Redis.

Rows are committed (the API opens its own sessions), named per test so tests never see each other's,
and deleted afterwards. Broker calls go to recorders; the token bucket to a key prefix of the test's own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from schemas.db import session_scope
from schemas.settings import Settings
from schemas.tables import ApiKey, AuditEntry, InboxStatus
from tests.support.admin_world import (
    API,
    Published,
    SentJobs,
    SentTasks,
    World,
    job_queued,
    no_enqueue,
)
from tests.support.processes import free_port
from webhooks_gateway.app import create_app
from workers import api_keys
from workers.dead_letters import REPLAY_HEADER
from workers.jobs import JOBS
from workers.queues import JOB_QUEUE
from workers.rate_limit import TokenBucket


@pytest.fixture
def world(pg_engine: Engine) -> Iterator[World]:
    seeded = World(pg_engine)
    yield seeded
    seeded.clean()


@pytest.fixture
def client(
    pg_settings: Settings,
    sent: SentTasks,
    published: Published,
    sent_jobs: SentJobs,
    bucket: TokenBucket,
) -> Iterator[TestClient]:
    app = create_app(
        pg_settings,
        enqueue=no_enqueue,
        send_task=sent,
        publish=published,
        send_job=sent_jobs,
        bucket=bucket,
    )
    with TestClient(app) as test_client:
        yield test_client


# --- who may call -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer hf_00000000_not-a-real-key"},
        {"X-API-Key": "hf_00000000_not-a-real-key"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
    ids=["no-key", "unknown-bearer", "unknown-x-api-key", "wrong-scheme"],
)
def test_without_a_valid_key_it_is_401_with_www_authenticate(
    client: TestClient, headers: dict[str, str]
) -> None:
    response = client.get(f"{API}/dead-letters", headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_revoked_key_is_401(client: TestClient, world: World) -> None:
    name, plaintext = world.key()
    with session_scope(world.sessions) as session:
        api_keys.revoke(session, name, actor="test")

    response = client.get(f"{API}/dead-letters", headers={"Authorization": f"Bearer {plaintext}"})

    assert response.status_code == 401


def test_the_key_may_also_come_in_x_api_key_and_its_use_is_recorded(
    client: TestClient, world: World
) -> None:
    name, plaintext = world.key("dlq:read")

    response = client.get(f"{API}/dead-letters", headers={"X-API-Key": plaintext})

    assert response.status_code == 200
    with world.sessions() as session:
        row = session.scalar(select(ApiKey).where(ApiKey.name == name))
        assert row is not None
        assert row.last_used_at is not None


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", "/dead-letters", "dlq:read"),
        ("POST", "/dead-letters/1/replay", "dlq:write"),
        ("GET", "/events", "events:read"),
        ("POST", "/events/1/replay", "events:replay"),
    ],
)
def test_a_key_without_the_scope_is_403_naming_it(
    client: TestClient, world: World, method: str, path: str, scope: str
) -> None:
    others = ",".join(s for s in api_keys.SCOPES if s != scope)

    response = client.request(method, f"{API}{path}", headers=world.auth(others))

    assert response.status_code == 403
    assert scope in response.json()["detail"]


def test_over_its_rate_a_key_gets_429_with_retry_after(client: TestClient, world: World) -> None:
    headers = world.auth("dlq:read", rate_per_minute=2)

    statuses = [client.get(f"{API}/dead-letters", headers=headers) for _ in range(3)]

    assert [r.status_code for r in statuses] == [200, 200, 429]
    retry_after = int(statuses[2].headers["Retry-After"])
    assert 1 <= retry_after <= 30  # one token every 30 seconds
    # Another key has a bucket of its own.
    assert client.get(f"{API}/dead-letters", headers=world.auth("dlq:read")).status_code == 200


# --- dead letters -------------------------------------------------------------------------------


def test_list_and_show_dead_letters(client: TestClient, world: World) -> None:
    older = world.dead_letter()
    newer = world.dead_letter()
    world.dead_letter(task_name=f"tasks.test.other_{world.tag}")
    headers = world.auth("dlq:read")

    listed = client.get(f"{API}/dead-letters", params={"task": world.task_name}, headers=headers)
    shown = client.get(f"{API}/dead-letters/{older.id}", headers=headers)

    assert listed.status_code == 200
    assert [item["id"] for item in listed.json()["items"]] == [newer.id, older.id]
    assert listed.json()["count"] == 2
    assert "traceback" not in listed.json()["items"][0]
    detail = shown.json()
    assert shown.status_code == 200
    assert detail["task_name"] == world.task_name
    assert (detail["args"], detail["kwargs"]) == ([42, "cus_Test"], {"email": "ada@example.com"})
    assert detail["traceback"].startswith("Traceback")
    assert (detail["status"], detail["attempts"], detail["queue"]) == ("dead", 4, "lifecycle")


def test_list_filters_by_status_and_limit(client: TestClient, world: World) -> None:
    world.dead_letter()
    discarded = world.dead_letter(status="discarded")
    world.dead_letter()
    headers = world.auth("dlq:read")
    task = world.task_name

    by_status = client.get(
        f"{API}/dead-letters", params={"task": task, "status": "discarded"}, headers=headers
    )
    limited = client.get(f"{API}/dead-letters", params={"task": task, "limit": 1}, headers=headers)
    bad_status = client.get(f"{API}/dead-letters", params={"status": "zombie"}, headers=headers)
    future = client.get(
        f"{API}/dead-letters",
        params={"task": task, "since": "2999-01-01T00:00:00"},
        headers=headers,
    )

    assert [item["id"] for item in by_status.json()["items"]] == [discarded.id]
    assert limited.json()["count"] == 1
    assert bad_status.status_code == 422
    assert (future.status_code, future.json()["count"]) == (200, 0)


def test_an_unknown_dead_letter_is_404(client: TestClient, world: World) -> None:
    headers = world.auth()

    assert client.get(f"{API}/dead-letters/999999999", headers=headers).status_code == 404
    replay = client.post(f"{API}/dead-letters/999999999/replay", headers=headers)
    discard = client.post(
        f"{API}/dead-letters/999999999/discard", json={"reason": "x"}, headers=headers
    )
    assert (replay.status_code, discard.status_code) == (404, 404)


def test_replay_sends_the_same_task_marks_the_row_and_audits_the_key(
    client: TestClient, world: World, sent: SentTasks
) -> None:
    row = world.dead_letter()
    name, plaintext = world.key("dlq:write")
    headers = {"Authorization": f"Bearer {plaintext}"}

    response = client.post(f"{API}/dead-letters/{row.id}/replay", headers=headers)

    assert response.status_code == 200
    new_task_id = sent.task_ids[0]
    assert response.json() == {"id": row.id, "new_task_id": new_task_id}
    assert sent.calls == [
        (world.task_name, [42, "cus_Test"], {"email": "ada@example.com"}, {REPLAY_HEADER: row.id})
    ]
    stored = world.reload_dead_letter(row.id)
    assert (stored.status, stored.replayed_task_id) == ("replayed", new_task_id)
    (entry,) = world.audit("dead_letter.replayed", row.id)
    assert entry.actor == f"api:{name}"
    assert entry.detail["new_task_id"] == new_task_id

    again = client.post(f"{API}/dead-letters/{row.id}/replay", headers=headers)

    assert again.status_code == 409
    assert len(sent.calls) == 1


def test_replay_with_the_broker_down_is_503_and_leaves_the_row_dead_with_the_attempt_audited(
    client: TestClient, world: World, sent: SentTasks
) -> None:
    row = world.dead_letter()
    sent.broker_up = False

    response = client.post(f"{API}/dead-letters/{row.id}/replay", headers=world.auth())

    assert response.status_code == 503
    stored = world.reload_dead_letter(row.id)
    assert (stored.status, stored.replayed_task_id) == ("dead", None)
    assert len(world.audit("dead_letter.replay_failed", row.id)) == 1


@pytest.mark.parametrize(
    "body", [{"reason": ""}, {"reason": "   "}, {}, None], ids=["empty", "blank", "none", "no-body"]
)
def test_discard_needs_a_reason(
    client: TestClient, world: World, body: dict[str, str] | None
) -> None:
    row = world.dead_letter()

    response = client.post(
        f"{API}/dead-letters/{row.id}/discard", json=body, headers=world.auth("dlq:write")
    )

    assert response.status_code == 422
    assert world.reload_dead_letter(row.id).status == "dead"


def test_discard_keeps_the_row_with_the_reason_and_audits_it(
    client: TestClient, world: World, sent: SentTasks
) -> None:
    row = world.dead_letter()
    name, plaintext = world.key("dlq:write")
    headers = {"Authorization": f"Bearer {plaintext}"}

    response = client.post(
        f"{API}/dead-letters/{row.id}/discard",
        json={"reason": "customer deleted upstream"},
        headers=headers,
    )

    assert response.status_code == 200
    assert response.json() == {
        "id": row.id,
        "status": "discarded",
        "discard_reason": "customer deleted upstream",
    }
    stored = world.reload_dead_letter(row.id)
    assert (stored.status, stored.discard_reason) == ("discarded", "customer deleted upstream")
    (entry,) = world.audit("dead_letter.discarded", row.id)
    assert (entry.actor, entry.detail["reason"]) == (f"api:{name}", "customer deleted upstream")

    replay = client.post(f"{API}/dead-letters/{row.id}/replay", headers=headers)
    discard = client.post(
        f"{API}/dead-letters/{row.id}/discard", json={"reason": "twice"}, headers=headers
    )

    assert (replay.status_code, discard.status_code) == (409, 409)
    assert sent.calls == []


def test_bulk_replay_dry_run_reports_and_sends_nothing_then_replays(
    client: TestClient, world: World, sent: SentTasks
) -> None:
    first, second = world.dead_letter(), world.dead_letter()
    world.dead_letter(status="discarded")
    world.dead_letter(task_name=f"tasks.test.other_{world.tag}")
    headers = world.auth("dlq:write")
    filters = {"task": world.task_name, "since": "2000-01-01T00:00:00Z"}

    dry = client.post(
        f"{API}/dead-letters/replay", json={**filters, "dry_run": True}, headers=headers
    )

    assert dry.status_code == 200
    assert dry.json()["matched"] == 2
    assert dry.json()["matched_ids"] == [first.id, second.id]
    assert (dry.json()["replayed"], dry.json()["dry_run"]) == ([], True)
    assert sent.calls == []
    assert world.reload_dead_letter(first.id).status == "dead"

    done = client.post(f"{API}/dead-letters/replay", json=filters, headers=headers)

    assert done.status_code == 200
    assert (done.json()["replayed"], done.json()["dry_run"]) == ([first.id, second.id], False)
    assert [call[3] for call in sent.calls] == [
        {REPLAY_HEADER: first.id},
        {REPLAY_HEADER: second.id},
    ]
    assert world.reload_dead_letter(second.id).status == "replayed"
    again = client.post(f"{API}/dead-letters/replay", json=filters, headers=headers)
    assert (again.json()["matched"], again.json()["replayed"]) == (0, [])


def test_bulk_replay_refuses_unknown_filters(client: TestClient, world: World) -> None:
    response = client.post(
        f"{API}/dead-letters/replay", json={"tsk": "typo"}, headers=world.auth("dlq:write")
    )

    assert response.status_code == 422


# --- stored webhooks ----------------------------------------------------------------------------


def test_list_and_show_events(client: TestClient, world: World) -> None:
    processed = world.event()
    failed = world.event(status=InboxStatus.FAILED)
    headers = world.auth("events:read")

    listed = client.get(f"{API}/events", params={"event_type": world.event_type}, headers=headers)
    failed_only = client.get(
        f"{API}/events",
        params={"event_type": world.event_type, "status": "failed", "provider": "stripe"},
        headers=headers,
    )
    shown = client.get(f"{API}/events/{processed.id}", headers=headers)

    assert [item["id"] for item in listed.json()["items"]] == [failed.id, processed.id]
    assert [item["id"] for item in failed_only.json()["items"]] == [failed.id]
    detail = shown.json()
    assert (detail["event_id"], detail["status"]) == (processed.event_id, "processed")
    assert detail["body"] == '{"id": "evt_admin", "type": "invoice.paid"}'
    assert detail["headers"] == {"Stripe-Signature": "t=1,v1=abc"}
    assert client.get(f"{API}/events/999999999", headers=headers).status_code == 404


def test_event_replay_enqueues_it_again_and_audits_the_key(
    client: TestClient, world: World, published: Published
) -> None:
    row = world.event()
    name, plaintext = world.key("events:replay")

    response = client.post(
        f"{API}/events/{row.id}/replay", headers={"Authorization": f"Bearer {plaintext}"}
    )

    assert response.status_code == 200
    assert response.json() == {"id": row.id, "task_id": f"process-event-{row.id}"}
    assert published.inbox_ids == [row.id]
    stored = world.reload_event(row.id)
    assert (stored.status, stored.processed_at) == (InboxStatus.ENQUEUED, None)
    assert stored.enqueued_at is not None
    (entry,) = world.audit("inbox_event.replayed", row.id)
    assert (entry.actor, entry.detail["previous_status"]) == (f"api:{name}", "processed")
    missing = client.post(
        f"{API}/events/999999999/replay", headers={"Authorization": f"Bearer {plaintext}"}
    )
    assert missing.status_code == 404


def test_event_replay_with_the_broker_down_is_503_and_leaves_the_row_received_for_the_sweep(
    client: TestClient, world: World, published: Published
) -> None:
    row = world.event()
    published.broker_up = False

    response = client.post(f"{API}/events/{row.id}/replay", headers=world.auth("events:replay"))

    assert response.status_code == 503
    stored = world.reload_event(row.id)
    assert (stored.status, stored.enqueued_at) == (InboxStatus.RECEIVED, None)
    assert len(world.audit("inbox_event.replayed", row.id)) == 1


# --- the schema ---------------------------------------------------------------------------------


# --- scheduled jobs -------------------------------------------------------------------------------


def _job_audit(world: World, actor: str) -> list[tuple[str, dict[str, object]]]:
    with world.sessions() as session:
        rows = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.entity_type == "job", AuditEntry.actor == actor)
            .order_by(AuditEntry.id)
        )
        return [(row.action, dict(row.detail, entity_id=row.entity_id)) for row in rows]


def test_a_jobs_run_key_queues_the_job_as_itself_on_the_jobs_queue_and_is_audited(
    client: TestClient, world: World, sent_jobs: SentJobs
) -> None:
    name, plaintext = world.key("jobs:run")
    headers = {"Authorization": f"Bearer {plaintext}"}

    response = client.post(f"{API}/jobs/slack-sync", params={"dry_run": "true"}, headers=headers)

    assert response.status_code == 202
    assert response.json() == job_queued("slack-sync", "task-1", dry_run=True)
    task = JOBS["slack-sync"].task
    assert sent_jobs.sent == [(task, {"triggered_by": f"api:{name}", "dry_run": True}, JOB_QUEUE)]
    assert _job_audit(world, f"api:{name}") == [
        ("job.requested", {"task": task, "dry_run": True, "entity_id": "slack-sync"})
    ]


def test_starting_a_job_needs_the_jobs_run_scope_and_a_known_job(
    client: TestClient, world: World, sent_jobs: SentJobs
) -> None:
    without = client.post(f"{API}/jobs/slack-sync", headers=world.auth("dlq:write,events:replay"))
    unknown = client.post(f"{API}/jobs/nightly-backup", headers=world.auth("jobs:run"))

    assert without.status_code == 403
    assert "jobs:run" in without.json()["detail"]
    assert unknown.status_code == 404
    assert "nightly-backup" in unknown.json()["detail"]
    assert sent_jobs.sent == []


def test_starting_a_job_with_the_broker_down_is_503_and_the_failed_attempt_is_audited(
    client: TestClient, world: World, sent_jobs: SentJobs
) -> None:
    name, plaintext = world.key("jobs:run")
    sent_jobs.broker_up = False

    response = client.post(
        f"{API}/jobs/luma-approval", headers={"Authorization": f"Bearer {plaintext}"}
    )

    assert response.status_code == 503
    assert [action for action, _ in _job_audit(world, f"api:{name}")] == [
        "job.requested",
        "job.request_failed",
    ]


def test_openapi_is_served_under_the_mount(client: TestClient) -> None:
    schema = client.get(f"{API}/openapi.json")
    docs = client.get(f"{API}/docs")

    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {
        "/dead-letters",
        "/dead-letters/{dead_letter_id}",
        "/dead-letters/{dead_letter_id}/replay",
        "/dead-letters/{dead_letter_id}/discard",
        "/dead-letters/replay",
        "/events",
        "/events/{inbox_id}",
        "/events/{inbox_id}/replay",
    } <= set(paths)
    assert schema.json()["servers"] == [{"url": API}]
    assert set(schema.json()["components"]["securitySchemes"]) == {"HTTPBearer", "APIKeyHeader"}
    assert docs.status_code == 200
    assert f"{API}/openapi.json" in docs.text


def test_the_status_names_match_the_store() -> None:
    """The API's status enums are literals; they must follow the tables' own lists."""
    from typing import get_args

    from webhooks_gateway.admin.api import DeadLetterStatusName, InboxStatusName
    from workers.dead_letters import DeadLetterStatus

    inbox = {v for k, v in vars(InboxStatus).items() if k.isupper()}
    assert set(get_args(DeadLetterStatusName)) == set(DeadLetterStatus.ALL)
    assert set(get_args(InboxStatusName)) == inbox


def test_with_redis_down_the_rate_limit_lets_authenticated_calls_through(
    pg_settings: Settings, world: World
) -> None:
    """The limit guards load, not access: the key is still checked in the database."""
    settings = pg_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    app = create_app(settings, enqueue=no_enqueue, send_task=SentTasks(), publish=Published())
    with TestClient(app) as test_client:
        allowed = test_client.get(f"{API}/dead-letters", headers=world.auth("dlq:read"))
        refused = test_client.get(f"{API}/dead-letters")

    assert allowed.status_code == 200
    assert refused.status_code == 401

"""Integration health: inbound from the inbox, outbound from the provider-call trail in Redis, the
last run of each scheduled job; one report for the page and `GET /admin/api/health`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fakeredis
import pytest
import redis
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from schemas.db import make_engine, session_scope
from schemas.migrate import upgrade
from schemas.tables import AuditEntry, InboxStatus, JobRun, WebhookEvent
from tests.conftest import make_settings
from tests.support.admin_world import SentJobs
from tests.webhooks_gateway.admin.conftest import ADMIN, PagesWorld, sign_in
from webhooks_gateway.admin.health import IntegrationHealth, integration_health, level_of
from workers import runtime
from workers.jobs import JOBS
from workers.provider_calls import record_provider_call
from workers.queues import JOB_QUEUE

NOW = datetime.now(UTC)


@pytest.fixture
def trail(monkeypatch: pytest.MonkeyPatch) -> fakeredis.FakeRedis:
    """The provider-call trail, in a fake Redis that record_provider_call writes to."""
    fake = fakeredis.FakeRedis()
    monkeypatch.setattr(runtime, "redis", lambda: fake)
    return fake


def _provider(world: PagesWorld) -> str:
    return f"prov{world.tag}"


def _webhook(world: PagesWorld, status: str, received_at: datetime) -> None:
    with session_scope(world.sessions) as session:
        row = WebhookEvent(
            provider=_provider(world),
            event_id=f"evt_{len(world.inbox_ids)}_{world.tag}",
            event_type=world.event_type,
            body=b"{}",
            headers={},
            status=status,
            received_at=received_at,
        )
        session.add(row)
        session.flush()
        world.inbox_ids.append(row.id)


def _job_run(world: PagesWorld, outcome: str, started_at: datetime, **counts: int) -> int:
    with session_scope(world.sessions) as session:
        row = JobRun(
            job=world.job_name,
            triggered_by="beat",
            started_at=started_at,
            finished_at=started_at + timedelta(seconds=5),
            outcome=outcome,
            counts=counts,
            error="Luma answered 500" if outcome == "failed" else None,
        )
        session.add(row)
        session.flush()
        return row.id


def _report(world: PagesWorld, redis_client: redis.Redis) -> IntegrationHealth:
    with world.sessions() as session:
        return integration_health(
            session, redis_client, [(_provider(world), True), ("absent", False)], now=NOW
        )


@pytest.fixture
def seeded(world: PagesWorld, trail: fakeredis.FakeRedis) -> Iterator[PagesWorld]:
    """Three deliveries in the last hour, one failed; an older failure; calls 3 ok, 1 error; two runs."""
    for status in (InboxStatus.PROCESSED, InboxStatus.PROCESSED, InboxStatus.FAILED):
        _webhook(world, status, NOW - timedelta(minutes=10))
    _webhook(world, InboxStatus.FAILED, NOW - timedelta(hours=3))
    for answer in (200, 201, 502, 200):
        record_provider_call(_provider(world), answer, now=(NOW - timedelta(minutes=5)).timestamp())
    _job_run(world, "failed", NOW - timedelta(hours=12), approved=1)
    _job_run(world, "succeeded", NOW - timedelta(minutes=30), approved=4, declined=2)
    yield world
    with session_scope(world.sessions) as session:
        session.execute(delete(WebhookEvent).where(WebhookEvent.provider == _provider(world)))
    world.inbox_ids.clear()


def test_webhooks_report_the_newest_delivery_and_the_last_hours_failure_rate(
    seeded: PagesWorld, trail: fakeredis.FakeRedis
) -> None:
    report = _report(seeded, trail)

    mine, absent = report.providers
    assert mine.webhooks.last_received_at == NOW - timedelta(minutes=10)
    assert (mine.webhooks.last_hour, mine.webhooks.failed_last_hour) == (3, 1)
    assert mine.webhooks.error_rate == pytest.approx(1 / 3)
    assert mine.webhooks.level == "critical"
    assert (absent.webhooks.last_received_at, absent.webhooks.error_rate) == (None, None)
    assert absent.webhooks.level == "unknown"


def test_calls_report_the_last_success_and_failure_and_the_error_rate(
    seeded: PagesWorld, trail: fakeredis.FakeRedis
) -> None:
    report = _report(seeded, trail)

    mine, absent = report.providers
    assert report.calls_known
    assert (mine.calls.last_hour, mine.calls.errors_last_hour) == (4, 1)
    assert mine.calls.error_rate == pytest.approx(0.25)
    assert mine.calls.level == "critical"
    assert mine.calls.last_ok_at is not None
    assert mine.calls.last_error_at is not None
    assert (absent.calls.last_hour, absent.calls.error_rate) == (0, None)


@pytest.mark.parametrize(
    ("rate", "level"),
    [
        (None, "unknown"),
        (0.0, "ok"),
        (0.01, "ok"),
        (0.0101, "warn"),
        (0.05, "warn"),
        (0.0501, "critical"),
        (1.0, "critical"),
    ],
)
def test_levels_follow_the_runbook_marks_of_1_and_5_percent(rate: float | None, level: str) -> None:
    assert level_of(rate) == level


def test_each_job_reports_only_its_newest_run(
    seeded: PagesWorld, trail: fakeredis.FakeRedis
) -> None:
    report = _report(seeded, trail)

    (job,) = [job for job in report.jobs if job.job == seeded.job_name]
    assert (job.outcome, job.counts) == ("succeeded", {"approved": 4, "declined": 2})
    assert job.error is None


def test_a_scheduled_job_that_never_ran_is_listed_as_never_run(
    tmp_path: Path, trail: fakeredis.FakeRedis
) -> None:
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'fresh.db'}")
    upgrade(settings)
    engine = make_engine(settings)
    try:
        with Session(engine) as session:
            report = integration_health(session, trail, [], now=NOW)
    finally:
        engine.dispose()

    assert [(job.job, job.outcome, job.run_id) for job in report.jobs] == [
        (name, "never_run", None) for name in sorted(JOBS)
    ]


def test_with_redis_away_calls_are_unknown_and_the_rest_still_reported(
    seeded: PagesWorld,
) -> None:
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)

    report = _report(seeded, unreachable)

    assert not report.calls_known
    mine, _ = report.providers
    assert (mine.calls.last_hour, mine.calls.error_rate, mine.calls.last_ok_at) == (None,) * 3
    assert mine.calls.level == "unknown"
    assert mine.webhooks.last_hour == 3


def test_the_health_api_needs_a_key_but_no_particular_scope(
    client: TestClient, world: PagesWorld
) -> None:
    _, key = world.key("events:read")

    anonymous = client.get(f"{ADMIN}/api/health")
    with_key = client.get(f"{ADMIN}/api/health", headers={"X-API-Key": key})

    assert anonymous.status_code == 401
    assert with_key.status_code == 200
    body = with_key.json()
    assert body["window_seconds"] == 3600
    stripe = next(item for item in body["providers"] if item["provider"] == "stripe")
    assert stripe["enabled"] is True
    assert set(stripe["webhooks"]) == {
        "last_received_at",
        "last_hour",
        "failed_last_hour",
        "error_rate",
        "level",
    }
    assert set(stripe["calls"]) == {
        "last_ok_at",
        "last_error_at",
        "last_hour",
        "errors_last_hour",
        "error_rate",
        "level",
    }


def test_the_health_api_reports_the_newest_run_of_every_job(
    client: TestClient, world: PagesWorld
) -> None:
    _job_run(world, "succeeded", NOW - timedelta(hours=12))
    newest = _job_run(world, "failed", NOW - timedelta(minutes=5), approved=1)
    _, key = world.key("dlq:read")

    body = client.get(f"{ADMIN}/api/health", headers={"X-API-Key": key}).json()

    (job,) = [job for job in body["jobs"] if job["job"] == world.job_name]
    assert (job["run_id"], job["outcome"], job["error"]) == (newest, "failed", "Luma answered 500")


def test_the_health_page_shows_every_provider_and_the_last_run_of_each_job(
    client: TestClient, world: PagesWorld
) -> None:
    _job_run(world, "failed", NOW - timedelta(minutes=5), approved=1)
    sign_in(client, world.key("events:read")[1])

    page = client.get(f"{ADMIN}/health")

    assert page.status_code == 200
    for provider in ("stripe", "clerk", "slack", "luma"):
        assert f'id="provider-{provider}"' in page.text
    assert f'id="job-{world.job_name}"' in page.text
    assert '<span class="status status-failed">failed</span>' in page.text
    assert "Luma answered 500" in page.text


def test_a_jobs_run_key_starts_a_job_from_the_health_page_and_the_start_is_audited(
    client: TestClient, world: PagesWorld, sent_jobs: SentJobs
) -> None:
    name, key = world.key("jobs:run")
    token = sign_in(client, key)

    page = client.get(f"{ADMIN}/health")
    forged = client.post(f"{ADMIN}/jobs/slack-sync/run", data={"csrf_token": "forged"})
    started = client.post(f"{ADMIN}/jobs/slack-sync/run", data={"csrf_token": token})

    assert 'id="run-slack-sync"' in page.text
    assert forged.status_code == 403
    assert started.status_code == 200
    assert "A run of slack-sync is queued (task task-1)." in started.text
    task = JOBS["slack-sync"].task
    assert sent_jobs.sent == [(task, {"triggered_by": f"web:{name}", "dry_run": False}, JOB_QUEUE)]
    with world.sessions() as session:
        actors = session.scalars(
            select(AuditEntry.actor).where(
                AuditEntry.action == "job.requested", AuditEntry.actor == f"web:{name}"
            )
        ).all()
    assert actors == [f"web:{name}"]


def test_without_jobs_run_the_health_page_offers_no_start_and_a_start_is_refused(
    client: TestClient, world: PagesWorld, sent_jobs: SentJobs
) -> None:
    token = sign_in(client, world.key("events:read")[1])

    page = client.get(f"{ADMIN}/health")
    started = client.post(f"{ADMIN}/jobs/slack-sync/run", data={"csrf_token": token})

    assert 'id="run-' not in page.text
    assert started.status_code == 403
    assert sent_jobs.sent == []

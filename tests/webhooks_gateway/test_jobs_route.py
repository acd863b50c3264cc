"""POST /jobs/{name}: the cron secret or 401, a known job or 404, then the job task on its queue."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import structlog
from pydantic import SecretStr
from starlette.testclient import TestClient

from schemas.migrate import upgrade
from schemas.settings import Settings
from tests.conftest import make_settings
from tests.support.admin_world import SentJobs, job_queued
from webhooks_gateway.app import create_app
from workers.jobs import JOBS
from workers.queues import JOB_QUEUE
from workers.rate_limit import TokenBucket

CRON_SECRET = "cron-secret-4f1c9a7e2b"


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'gateway.db'}", **overrides)
    upgrade(settings)
    return settings


@pytest.fixture
def sent() -> SentJobs:
    return SentJobs()


@pytest.fixture
def client(tmp_path: Path, sent: SentJobs) -> Iterator[TestClient]:
    settings = settings_for(tmp_path, cron_secret=SecretStr(CRON_SECRET))
    app = create_app(settings, send_job=sent, bucket=TokenBucket(fakeredis.FakeRedis()))
    with TestClient(app) as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_right_secret_queues_the_job_task_and_answers_202(
    client: TestClient, sent: SentJobs
) -> None:
    response = client.post("/jobs/luma-approval", headers=bearer(CRON_SECRET))

    assert response.status_code == 202
    assert response.json() == job_queued("luma-approval", "task-1", dry_run=False)
    assert sent.sent == [
        (JOBS["luma-approval"].task, {"triggered_by": "cron", "dry_run": False}, JOB_QUEUE)
    ]


def test_dry_run_true_asks_for_a_dry_run(client: TestClient, sent: SentJobs) -> None:
    response = client.post("/jobs/slack-sync?dry_run=true", headers=bearer(CRON_SECRET))

    assert response.status_code == 202
    assert response.json()["dry_run"] is True
    assert sent.sent == [
        (JOBS["slack-sync"].task, {"triggered_by": "cron", "dry_run": True}, JOB_QUEUE)
    ]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("wrong-secret"),
        bearer(CRON_SECRET[:-1]),
        {"Authorization": CRON_SECRET},
        {"Authorization": f"Basic {CRON_SECRET}"},
    ],
    ids=["none", "wrong", "prefix", "no-scheme", "basic"],
)
def test_without_the_secret_the_answer_is_401_and_nothing_is_queued(
    client: TestClient, sent: SentJobs, headers: dict[str, str]
) -> None:
    response = client.post("/jobs/luma-approval", headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert sent.sent == []


def test_an_unknown_job_is_401_without_the_secret_and_404_with_it(
    client: TestClient, sent: SentJobs
) -> None:
    # Which jobs exist is not told to callers without the secret.
    assert client.post("/jobs/no-such-job").status_code == 401

    response = client.post("/jobs/no-such-job", headers=bearer(CRON_SECRET))

    assert response.status_code == 404
    assert "no-such-job" in response.json()["error"]
    assert sent.sent == []


def test_only_post_starts_a_job(client: TestClient, sent: SentJobs) -> None:
    assert client.get("/jobs/luma-approval", headers=bearer(CRON_SECRET)).status_code == 405
    assert sent.sent == []


def test_a_broker_that_is_down_answers_503_so_the_cron_tries_again(
    client: TestClient, sent: SentJobs
) -> None:
    sent.broker_up = False

    response = client.post("/jobs/luma-approval", headers=bearer(CRON_SECRET))

    assert response.status_code == 503


def test_without_cron_secret_the_route_is_disabled_and_start_up_says_so(
    tmp_path: Path, sent: SentJobs
) -> None:
    settings = settings_for(tmp_path)
    with structlog.testing.capture_logs() as logs:
        app = create_app(settings, send_job=sent, bucket=TokenBucket(fakeredis.FakeRedis()))
    with TestClient(app) as client:
        response = client.post("/jobs/luma-approval", headers=bearer("anything"))

    assert response.status_code == 404
    assert "CRON_SECRET" in response.json()["error"]
    assert sent.sent == []
    assert any(
        entry["event"] == "gateway.jobs_route_disabled" and "CRON_SECRET" in entry["reason"]
        for entry in logs
    )

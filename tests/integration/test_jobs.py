"""The scheduled jobs end to end: started over HTTP (POST /jobs, or the admin API with an operator's
key) and run by a real Celery worker, or by `hookfleet jobs run` in its own process, against the
provider sandbox, PostgreSQL and a private Redis; faults injected at the sandbox."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session

from schemas.settings import normalize_database_url
from schemas.tables import AuditEntry, JobRun
from tests.integration.conftest import Fleet, running_fleet, start_redis
from tests.support.processes import Service, hookfleet, redis_url_of, wait_until
from tests.support.sandbox import SandboxServer
from tests.tasks.job_support import FAST, Community, unlimited
from tests.tasks.test_luma_approval import EXPECTED_DECLINE, statuses
from tests.tasks.test_luma_approval import seed_mix as seed_luma
from tests.tasks.test_slack_sync import EXPECTED, recorded
from tests.tasks.test_slack_sync import seed_mix as seed_slack
from workers import api_keys
from workers.sandbox.luma import SANDBOX_API_KEY

pytestmark = pytest.mark.integration
CRON_SECRET = "cron-integration-7d2e91"


def job_env(sandbox: SandboxServer) -> dict[str, str]:
    return {
        "LUMA_API_KEY": SANDBOX_API_KEY,
        "LUMA_API_BASE": sandbox.luma_api_base,
        "CRON_SECRET": CRON_SECRET,
        "LUMA_REQUESTS_PER_MINUTE": str(FAST),
        "SLACK_TIER2_PER_MINUTE": str(FAST),
        "SLACK_TIER3_PER_MINUTE": str(FAST),
        "JOB_CALL_ATTEMPTS": "3",
    }


@pytest.fixture(scope="module")
def jobs_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = start_redis(tmp_path_factory.mktemp("jobs-redis"))
    yield service
    service.stop()


@pytest.fixture(scope="module")
def jobs_fleet(
    database_url: str,
    jobs_redis: Service,
    sandbox: SandboxServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("jobs-fleet")
    with running_fleet(
        database_url, redis_url_of(jobs_redis), workdir, sandbox, overrides=job_env(sandbox)
    ) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(normalize_database_url(database_url))
    yield engine
    engine.dispose()


@pytest.fixture
def people(engine: Engine) -> Iterator[Community]:
    community = Community(engine)
    yield community
    community.remove()


@pytest.fixture
def fresh(sandbox: SandboxServer) -> Iterator[SandboxServer]:
    sandbox.reset()
    unlimited(sandbox)
    yield sandbox
    sandbox.reset()


def start(fleet: Fleet, job: str, *, secret: str = CRON_SECRET, query: str = "") -> httpx.Response:
    return httpx.post(
        f"{fleet.url}/jobs/{job}{query}",
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
    )


def last_run(engine: Engine, job: str) -> JobRun | None:
    with Session(engine) as session:
        return session.scalars(
            select(JobRun).where(JobRun.job == job).order_by(JobRun.id.desc()).limit(1)
        ).first()


def finished_run(engine: Engine, job: str, after_id: int, fleet: Fleet) -> JobRun:
    """The first run of `job` after run `after_id` once it has ended (the worker writes it)."""

    def ended() -> JobRun | None:
        fleet.worker.assert_running()
        run = last_run(engine, job)
        return run if run is not None and run.id > after_id and run.outcome != "running" else None

    wait_until(ended, timeout=60, interval=0.3, what=f"a finished {job} run")
    run = ended()
    assert run is not None
    return run


def newest_id(engine: Engine, job: str) -> int:
    run = last_run(engine, job)
    return run.id if run else 0


def test_post_jobs_runs_the_luma_approval_in_the_worker(
    jobs_fleet: Fleet, fresh: SandboxServer, people: Community, engine: Engine
) -> None:
    guests = seed_luma(fresh, people)
    before = newest_id(engine, "luma-approval")

    response = start(jobs_fleet, "luma-approval")
    run = finished_run(engine, "luma-approval", before, jobs_fleet)

    assert response.status_code == 202
    assert (run.outcome, run.triggered_by) == ("succeeded", "cron")
    assert (run.counts["approved"], run.counts["declined"]) == (4, 4)
    assert statuses(fresh, guests) == EXPECTED_DECLINE


def test_an_operators_key_with_jobs_run_starts_the_approval_and_the_run_names_the_key(
    jobs_fleet: Fleet, fresh: SandboxServer, people: Community, engine: Engine
) -> None:
    guests = seed_luma(fresh, people)
    name = f"oncall-{secrets.token_hex(4)}"
    with Session(engine) as session, session.begin():
        _, plaintext = api_keys.create_key(
            session, name=name, scopes="jobs:run", rate_per_minute=60
        )
    before = newest_id(engine, "luma-approval")

    response = httpx.post(
        f"{jobs_fleet.url}/admin/api/jobs/luma-approval",
        headers={"Authorization": f"Bearer {plaintext}"},
        timeout=10,
    )
    run = finished_run(engine, "luma-approval", before, jobs_fleet)

    assert response.status_code == 202
    assert (run.outcome, run.triggered_by) == ("succeeded", f"api:{name}")
    assert statuses(fresh, guests) == EXPECTED_DECLINE
    with Session(engine) as session:
        audited = session.scalars(
            select(AuditEntry.action).where(AuditEntry.actor == f"api:{name}")
        ).all()
    assert audited == ["job.requested"]


def test_the_gateway_refuses_a_wrong_secret_and_an_unknown_job(
    jobs_fleet: Fleet, engine: Engine
) -> None:
    before = newest_id(engine, "luma-approval")

    assert start(jobs_fleet, "luma-approval", secret="guess").status_code == 401
    assert httpx.post(f"{jobs_fleet.url}/jobs/luma-approval", timeout=10).status_code == 401
    assert start(jobs_fleet, "no-such-job").status_code == 404
    assert newest_id(engine, "luma-approval") == before


def test_the_cli_runs_a_job_and_a_second_run_changes_nothing(
    jobs_fleet: Fleet, fresh: SandboxServer, people: Community, engine: Engine, tmp_path: Path
) -> None:
    seed_slack(fresh, people)

    first = hookfleet("jobs", "run", "slack-sync", "--json", env=jobs_fleet.env, cwd=tmp_path)
    fresh.reset()
    unlimited(fresh)
    second = hookfleet("jobs", "run", "slack-sync", "--json", env=jobs_fleet.env, cwd=tmp_path)
    listed = hookfleet("jobs", "list", "--job", "slack-sync", env=jobs_fleet.env, cwd=tmp_path)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    first_run, second_run = json.loads(first.stdout), json.loads(second.stdout)
    assert first_run["outcome"] == second_run["outcome"] == "succeeded"
    assert recorded(engine, people) == EXPECTED
    assert second_run["counts"].get("changed", 0) == second_run["counts"].get("new", 0) == 0
    assert f"{second_run['run_id']}  slack-sync  succeeded" in listed.stdout
    assert f"{first_run['run_id']}  slack-sync  succeeded" in listed.stdout


def test_a_cli_dry_run_writes_nothing(
    jobs_fleet: Fleet, fresh: SandboxServer, people: Community, engine: Engine, tmp_path: Path
) -> None:
    guests = seed_luma(fresh, people)
    before = newest_id(engine, "luma-approval")

    result = hookfleet(
        "jobs", "run", "luma-approval", "--dry-run", env=jobs_fleet.env, cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    assert "luma-approval dry run: succeeded" in result.stdout
    assert "approved: 4" in result.stdout
    assert newest_id(engine, "luma-approval") == before
    assert fresh.calls("luma", "update-status") == []
    assert set(statuses(fresh, guests).values()) <= {"pending_approval", "approved"}
    assert statuses(fresh, guests)["late"] == "pending_approval"


def test_a_429_storm_in_the_worker_slows_the_sync_but_loses_nothing(
    jobs_fleet: Fleet, fresh: SandboxServer, people: Community, engine: Engine
) -> None:
    seed_slack(fresh, people)
    fresh.fault("slack", "users.list", status=429, count=3, retry_after=1)
    before = newest_id(engine, "slack-sync")

    start(jobs_fleet, "slack-sync")
    run = finished_run(engine, "slack-sync", before, jobs_fleet)

    assert run.outcome == "succeeded", run.error
    assert recorded(engine, people) == EXPECTED
    answers = [call["status"] for call in fresh.calls("slack", "users.list")]
    assert 429 in answers
    assert answers[-1] == 200


def test_an_outage_mid_run_ends_failed_with_partial_counts_and_the_next_run_finishes(
    jobs_fleet: Fleet, fresh: SandboxServer, people: Community, engine: Engine
) -> None:
    guests = seed_luma(fresh, people)
    fresh.fault("luma", "update-status", status=503, count=-1, after=2)
    before = newest_id(engine, "luma-approval")

    start(jobs_fleet, "luma-approval")
    failed = finished_run(engine, "luma-approval", before, jobs_fleet)
    fresh.clear_faults()
    start(jobs_fleet, "luma-approval")
    finished = finished_run(engine, "luma-approval", failed.id, jobs_fleet)

    assert failed.outcome == "failed"
    assert failed.error is not None
    assert "503" in failed.error
    assert failed.counts["approved"] + failed.counts["declined"] == 2
    assert finished.outcome == "succeeded"
    assert finished.counts["approved"] + finished.counts["declined"] == 6
    assert statuses(fresh, guests) == EXPECTED_DECLINE

"""`run_job`: one run at a time per job, a job_runs row per start, outcomes and counts, dry runs.

The bodies here are test bodies registered under job names of each test's own, run on the run's
PostgreSQL database; the lock lives in fakeredis (its TTLs run on the real clock).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import fakeredis
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session, sessionmaker

from schemas.db import session_scope
from schemas.tables import JobRun
from tests.conftest import make_settings
from workers import jobs, runtime
from workers.jobs import JobContext, JobSkipped, JobSpec, UnknownJobError, run_job

LOCK_TTL = 3
started = threading.Event()
release = threading.Event()


def counting_body(context: JobContext) -> None:
    context.counts["seen"] += 3
    context.counts["dry"] = int(context.dry_run)


def options_body(context: JobContext) -> None:
    context.counts["lookup"] = int(context.options.get("strategy") == "lookup")
    context.counts["dry"] = int(context.dry_run)


def blocking_body(context: JobContext) -> None:
    context.counts["began"] = 1
    started.set()
    if not release.wait(20):
        raise TimeoutError("the test never released the run")


def failing_body(context: JobContext) -> None:
    context.counts["done_before_the_outage"] = 7
    context.checkpoint()
    raise ConnectionError("provider outage")


def unconfigured_body(context: JobContext) -> None:
    raise JobSkipped("PROVIDER_KEY is not set")


def slow_body(context: JobContext) -> None:
    # Outlives the lock's TTL twice over: only the heartbeat keeps the lock.
    time.sleep(LOCK_TTL * 2)


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch, pg_engine: Engine) -> fakeredis.FakeRedis:
    """runtime's stores for run_job: the test database, a fakeredis, a short lock TTL."""
    settings = make_settings(
        database_url=pg_engine.url.render_as_string(hide_password=False),
        job_lock_ttl_seconds=LOCK_TTL,
    )
    redis = fakeredis.FakeRedis()
    monkeypatch.setattr(runtime, "settings", lambda: settings)
    monkeypatch.setattr(
        runtime, "sessions", lambda: sessionmaker(pg_engine, expire_on_commit=False)
    )
    monkeypatch.setattr(runtime, "redis", lambda: redis)
    started.clear()
    release.clear()
    return redis


@pytest.fixture
def job(monkeypatch: pytest.MonkeyPatch, pg_engine: Engine) -> Iterator[str]:
    """A job name of this test's own; `register(name, body)` gives it a body of this module."""
    name = f"test-job-{secrets.token_hex(4)}"
    yield name
    with session_scope(sessionmaker(pg_engine)) as session:
        session.execute(delete(JobRun).where(JobRun.job == name))


def register(monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> None:
    spec = JobSpec(name, f"tests.{name}", f"{__name__}:{body}", "slack_sync_schedule", "a test")
    monkeypatch.setitem(jobs.JOBS, name, spec)


def runs(pg_engine: Engine, name: str) -> list[JobRun]:
    with Session(pg_engine) as session:
        return list(session.scalars(select(JobRun).where(JobRun.job == name).order_by(JobRun.id)))


def job_runs_metric(name: str, outcome: str) -> float:
    labels = {"job": name, "outcome": outcome}
    return REGISTRY.get_sample_value("hookfleet_job_runs_total", labels) or 0.0


def test_a_run_writes_one_row_with_its_outcome_counts_and_times(
    fleet: fakeredis.FakeRedis, job: str, monkeypatch: pytest.MonkeyPatch, pg_engine: Engine
) -> None:
    register(monkeypatch, job, "counting_body")

    outcome = run_job(job, triggered_by="cli:alice")

    [row] = runs(pg_engine, job)
    assert (outcome.outcome, outcome.run_id, outcome.counts) == (
        "succeeded",
        row.id,
        {"seen": 3, "dry": 0},
    )
    assert (row.outcome, row.triggered_by, row.counts, row.error) == (
        "succeeded",
        "cli:alice",
        {"seen": 3, "dry": 0},
        None,
    )
    assert row.finished_at is not None
    assert row.finished_at >= row.started_at
    assert job_runs_metric(job, "succeeded") == 1
    assert fleet.keys("hookfleet:job-lock:*") == []  # released


def test_a_start_while_a_run_is_going_is_skipped_and_says_which_run(
    fleet: fakeredis.FakeRedis, job: str, monkeypatch: pytest.MonkeyPatch, pg_engine: Engine
) -> None:
    register(monkeypatch, job, "blocking_body")
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(run_job, job, triggered_by="beat")
        assert started.wait(20)

        second = run_job(job, triggered_by="cron")
        release.set()
        first_outcome = first.result(20)

    assert first_outcome.outcome == "succeeded"
    assert second.outcome == "skipped"
    assert second.error == (
        f"already running: run {first_outcome.run_id} started "
        f"{runs(pg_engine, job)[0].started_at.isoformat(timespec='seconds')} by beat"
    )
    rows = runs(pg_engine, job)
    assert [(row.outcome, row.triggered_by) for row in rows] == [
        ("succeeded", "beat"),
        ("skipped", "cron"),
    ]
    assert job_runs_metric(job, "skipped") == 1
    # Once the first run ended, the job can run again.
    register(monkeypatch, job, "counting_body")
    assert run_job(job).outcome == "succeeded"


def test_the_running_job_keeps_its_lock_past_the_ttl(
    fleet: fakeredis.FakeRedis, job: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(monkeypatch, job, "slow_body")
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(run_job, job)
        time.sleep(LOCK_TTL * 1.5)  # past the TTL the lock was taken with

        second = run_job(job)
        first_outcome = first.result(20)

    assert second.outcome == "skipped"
    assert first_outcome.outcome == "succeeded"


def test_a_failing_body_ends_the_run_failed_with_the_counts_so_far(
    fleet: fakeredis.FakeRedis, job: str, monkeypatch: pytest.MonkeyPatch, pg_engine: Engine
) -> None:
    register(monkeypatch, job, "failing_body")

    outcome = run_job(job)

    [row] = runs(pg_engine, job)
    assert outcome.outcome == row.outcome == "failed"
    assert row.counts == {"done_before_the_outage": 7}
    assert row.error == "ConnectionError: provider outage"
    assert job_runs_metric(job, "failed") == 1
    # The failure freed the lock: the next run starts.
    register(monkeypatch, job, "counting_body")
    assert run_job(job).outcome == "succeeded"


def test_a_body_that_cannot_run_is_skipped_with_its_reason(
    fleet: fakeredis.FakeRedis, job: str, monkeypatch: pytest.MonkeyPatch, pg_engine: Engine
) -> None:
    register(monkeypatch, job, "unconfigured_body")

    outcome = run_job(job)

    [row] = runs(pg_engine, job)
    assert (row.outcome, row.error) == ("skipped", "PROVIDER_KEY is not set")
    assert outcome.outcome == "skipped"


def test_a_run_left_running_by_a_lost_worker_is_closed_by_the_next(
    fleet: fakeredis.FakeRedis, job: str, monkeypatch: pytest.MonkeyPatch, pg_engine: Engine
) -> None:
    register(monkeypatch, job, "counting_body")
    with session_scope(sessionmaker(pg_engine)) as session:
        session.add(JobRun(job=job, triggered_by="beat", outcome="running", counts={"seen": 1}))

    run_job(job)

    lost, new = runs(pg_engine, job)
    assert (lost.outcome, lost.counts) == ("failed", {"seen": 1})
    assert lost.error is not None
    assert "lost" in lost.error
    assert new.outcome == "succeeded"


def test_a_dry_run_writes_no_row_and_takes_no_lock(
    fleet: fakeredis.FakeRedis, job: str, monkeypatch: pytest.MonkeyPatch, pg_engine: Engine
) -> None:
    register(monkeypatch, job, "counting_body")

    outcome = run_job(job, dry_run=True)

    assert (outcome.outcome, outcome.run_id, outcome.dry_run) == ("succeeded", None, True)
    assert outcome.counts == {"seen": 3, "dry": 1}
    assert runs(pg_engine, job) == []


def test_an_unknown_job_is_refused_naming_the_jobs(fleet: fakeredis.FakeRedis) -> None:
    with pytest.raises(UnknownJobError, match="luma-approval, slack-sync"):
        run_job("no-such-job")

"""Two beats on one Redis: RedBeat's lock lets one schedule, so each slot runs once; when that beat
stops, the other takes over. A job scheduled `every 2s` makes the slots come fast."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session

from schemas.settings import normalize_database_url
from schemas.tables import JobRun
from tests.integration.conftest import Fleet, running_fleet, start_redis
from tests.integration.test_jobs import job_env
from tests.support.processes import Service, beat_service, redis_url_of, wait_until
from tests.support.sandbox import SandboxServer
from tests.tasks.job_support import unlimited

pytestmark = pytest.mark.integration
INTERVAL_SECONDS = 2
JOB = "slack-sync"


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(normalize_database_url(database_url))
    yield engine
    engine.dispose()


@pytest.fixture
def beat_fleet(database_url: str, sandbox: SandboxServer, tmp_path: Path) -> Iterator[Fleet]:
    sandbox.reset()
    unlimited(sandbox)
    redis = start_redis(tmp_path)
    overrides = job_env(sandbox) | {
        "SLACK_SYNC_SCHEDULE": f"every {INTERVAL_SECONDS}s",
        "BEAT_LOCK_TIMEOUT_SECONDS": "4",
    }
    try:
        with running_fleet(
            database_url, redis_url_of(redis), tmp_path / "fleet", sandbox, overrides=overrides
        ) as fleet:
            yield fleet
    finally:
        redis.stop()
        sandbox.reset()


def beat_runs(engine: Engine, after_id: int) -> list[JobRun]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(JobRun)
                .where(JobRun.job == JOB, JobRun.id > after_id, JobRun.triggered_by == "beat")
                .order_by(JobRun.id)
            )
        )


def newest_id(engine: Engine) -> int:
    with Session(engine) as session:
        runs = session.scalars(select(JobRun.id).order_by(JobRun.id.desc()).limit(1)).all()
        return runs[0] if runs else 0


def log_of(beat: Service) -> str:
    return beat.log_path.read_text(errors="replace") if beat.log_path.exists() else ""


def sends(beat: Service) -> list[datetime]:
    """When this beat sent the job: its scheduler's own clock, which a busy worker cannot skew."""
    lines = (json.loads(line) for line in log_of(beat).splitlines() if line.startswith("{"))
    return [
        datetime.fromisoformat(line["timestamp"])
        for line in lines
        if line.get("event", "").startswith(f"Scheduler: Sending due task {JOB} ")
    ]


def holds_lock(beat: Service) -> bool:
    return "Acquired lock" in log_of(beat)


def assert_one_run_per_slot(runs: list[JobRun], sent: list[datetime]) -> None:
    finished = [(run.id, run.outcome, run.error) for run in runs if run.outcome != "running"]
    # A run still going when its next slot comes (a loaded box) makes that slot `skipped`: allowed.
    assert all(outcome in {"succeeded", "skipped"} for _, outcome, _ in finished), finished
    assert any(outcome == "succeeded" for _, outcome, _ in finished), finished
    # Each run comes from one send, and a slot sent twice (by both beats, or twice by one) would
    # show as two sends within moments. The runs' own start times are no measure: a loaded worker
    # started one slot 1.65 s late, 0.2 s before the next.
    assert len(runs) <= len(sent), (len(runs), sent)
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(sent)]
    assert all(gap >= INTERVAL_SECONDS * 0.9 for gap in gaps), gaps


def test_two_beats_run_each_slot_once_and_the_second_takes_over_when_the_first_stops(
    beat_fleet: Fleet, engine: Engine, tmp_path: Path
) -> None:
    before = newest_id(engine)
    beats = [beat_service(beat_fleet.env, tmp_path / name) for name in ("beat-a", "beat-b")]
    for beat in beats:
        beat.log_path.parent.mkdir(parents=True, exist_ok=True)
        beat.start()
        beat_fleet.services[beat.log_path.parent.name] = beat

    wait_until(
        lambda: any(holds_lock(b) for b in beats), timeout=30, what="a beat holding the lock"
    )
    wait_until(lambda: len(beat_runs(engine, before)) >= 4, timeout=60, what="four scheduled runs")
    active = next(beat for beat in beats if holds_lock(beat))
    standby = next(beat for beat in beats if beat is not active)

    assert not holds_lock(standby)
    assert sends(standby) == []
    assert_one_run_per_slot(beat_runs(engine, before), sends(active))

    active.stop()
    handed_over = newest_id(engine)
    wait_until(lambda: holds_lock(standby), timeout=30, what="the standby beat taking the lock")
    wait_until(
        lambda: len(beat_runs(engine, handed_over)) >= 3, timeout=60, what="runs after takeover"
    )

    standby.assert_running()
    assert len(sends(standby)) >= 3
    assert_one_run_per_slot(beat_runs(engine, before), sorted(sends(active) + sends(standby)))

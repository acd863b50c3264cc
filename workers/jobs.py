"""Scheduled jobs: the registry, and `run_job`, the one way a job runs (beat, CLI, POST /jobs).

A run holds a Redis lock per job, kept alive by a heartbeat thread while the run goes on and left to
expire when its worker dies, so a run still going when the next is due is not started twice: the
second start writes a `skipped` job_runs row that names the run it found. Every real run writes one
`job_runs` row (start, end, outcome, counts; the counts are saved as the run goes, so a failed run
shows how far it got) and counts in `JOB_RUNS`. A dry run decides and reports, and writes nothing.

The job bodies live in `tasks/` (they use the provider clients), which `workers/` may not import:
the registry names them by import string and resolves them at run time.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from redis.exceptions import LockError
from redis.lock import Lock
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from schemas.db import session_scope
from schemas.settings import Settings
from schemas.tables import JobRun, utcnow
from workers import runtime
from workers.audit import audit
from workers.base_task import GatewayTask
from workers.logging import get_logger
from workers.metrics import JOB_RUNS
from workers.queues import JOB_QUEUE

log = get_logger(__name__)

LOCK_KEY = "hookfleet:job-lock:{job}"
MAX_ERROR_CHARS = 2000


class Outcome:
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class JobSpec:
    """A job: its Celery task (for beat and POST /jobs), its body (`module:function`, taking a
    `JobContext`) and the setting holding its schedule."""

    name: str
    task: str
    body: str
    schedule_setting: str
    description: str


JOBS: dict[str, JobSpec] = {
    spec.name: spec
    for spec in (
        JobSpec(
            name="luma-approval",
            task="tasks.approval.luma_approval",
            body="tasks.approval:run_luma_approval",
            schedule_setting="luma_approval_schedule",
            description="approve pending Luma RSVPs of active members, decline or skip the rest",
        ),
        JobSpec(
            name="slack-sync",
            task="tasks.slack_status.slack_sync",
            body="tasks.slack_status:run_slack_sync",
            schedule_setting="slack_sync_schedule",
            description="record every visible member's Slack account and its status",
        ),
    )
}
# The modules defining the job tasks, for the worker to import, and their routes to JOB_QUEUE.
JOB_TASK_MODULES = tuple(sorted({spec.task.rsplit(".", 1)[0] for spec in JOBS.values()}))
JOB_ROUTES = {spec.task: {"queue": JOB_QUEUE, "routing_key": JOB_QUEUE} for spec in JOBS.values()}


class UnknownJobError(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no job named {name!r}; jobs: {', '.join(sorted(JOBS))}")


class JobSkipped(Exception):
    """Raised by a body that cannot run (its provider is not configured): the run is `skipped`."""


def job_spec(name: str) -> JobSpec:
    try:
        return JOBS[name]
    except KeyError:
        raise UnknownJobError(name) from None


# (task name, kwargs, queue) -> task id; raises when the broker cannot take it.
SendJob = Callable[[str, dict[str, Any], str], str]
# job_runs.triggered_by holds this much of who asked.
TRIGGERED_BY_CHARS = 64


def request_run(
    sessions: sessionmaker[Session], name: str, *, dry_run: bool, actor: str, send: SendJob
) -> str:
    """Queue a run of job `name` for the jobs' worker, on an operator's behalf; return its task id.

    The request is audited and committed before the send, so the run's row (which names the
    same actor) never precedes its audit row; a send that fails is audited too, then raised.
    """
    spec = job_spec(name)
    _audit_job(sessions, actor, "job.requested", name, task=spec.task, dry_run=dry_run)
    kwargs = {"triggered_by": actor[:TRIGGERED_BY_CHARS], "dry_run": dry_run}
    try:
        return send(spec.task, kwargs, JOB_QUEUE)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:300]
        _audit_job(sessions, actor, "job.request_failed", name, error=error)
        raise


def _audit_job(
    sessions: sessionmaker[Session], actor: str, action: str, name: str, **detail: Any
) -> None:
    with session_scope(sessions) as session:
        audit(session, actor=actor, action=action, entity_type="job", entity_id=name, **detail)


@dataclass(frozen=True)
class JobOutcome:
    job: str
    outcome: str  # succeeded | failed | skipped
    run_id: int | None  # None for a dry run (it writes no row)
    counts: dict[str, int]
    error: str | None = None
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "outcome": self.outcome,
            "run_id": self.run_id,
            "counts": dict(self.counts),
            "error": self.error,
            "dry_run": self.dry_run,
        }


@dataclass
class JobContext:
    """What a job body gets: who started it, its options, the fleet's stores and its live counts."""

    job: str
    run_id: int | None
    dry_run: bool
    triggered_by: str
    options: dict[str, Any]
    settings: Settings
    sessions: sessionmaker[Session]
    redis: redis.Redis
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def actor(self) -> str:
        """The audit actor of this run's decisions."""
        return f"job:{self.job}"

    def checkpoint(self) -> None:
        """Save the counts so far on the run's row (a failed or killed run shows how far it got)."""
        if self.run_id is None:
            return
        with session_scope(self.sessions) as session:
            session.execute(
                update(JobRun).where(JobRun.id == self.run_id).values(counts=dict(self.counts))
            )


JobBody = Callable[[JobContext], None]


class JobTask(GatewayTask):
    """The Celery task of a job: no inbox event; a run's failure is its `failed` row, not a retry
    (only an error before the run could start, Redis or the database away, is retried)."""

    carries_inbox_id = False


def job_task_options(settings: Settings) -> dict[str, Any]:
    """Time limits of a job task (its queue is in JOB_ROUTES): the hard limit stays under the
    broker's visibility timeout (Settings.job_time_limit), so Redis never hands a running job to a
    second worker."""
    hard = settings.job_time_limit
    return {
        "base": JobTask,
        "time_limit": hard,
        "soft_time_limit": max(1, hard - min(60, hard // 10)),
    }


def resolve_body(spec: JobSpec) -> JobBody:
    module_name, _, attribute = spec.body.partition(":")
    body: JobBody = getattr(importlib.import_module(module_name), attribute)
    return body


class JobLock:
    """One run per job across the fleet: a Redis lock with a TTL that a heartbeat thread extends
    while the run goes on, so a dead worker's lock frees itself `ttl` seconds after it died."""

    def __init__(self, redis_client: redis.Redis, job: str, ttl: float) -> None:
        self.ttl = ttl
        # thread_local=False: the heartbeat thread extends the lock the run's thread took.
        self._lock = Lock(
            redis_client, LOCK_KEY.format(job=job), timeout=ttl, blocking=False, thread_local=False
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False

    def acquire(self) -> bool:
        return bool(self._lock.acquire(blocking=False))

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self._lock.extend(self.ttl, replace_ttl=True)
            except LockError as exc:
                self.lost = True
                log.error("job.lock_lost", error=str(exc)[:200])
                return
            except redis.RedisError as exc:  # try again at the next beat, before the TTL runs out
                log.warning("job.lock_not_extended", error=str(exc)[:200])

    @contextmanager
    def kept_alive(self) -> Iterator[None]:
        self._thread = threading.Thread(target=self._beat, name="job-lock-heartbeat", daemon=True)
        self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            self._thread.join(timeout=5)

    def release(self) -> None:
        try:
            self._lock.release()
        except LockError:
            log.warning("job.lock_expired_before_release")
        except redis.RedisError as exc:
            log.warning("job.lock_not_released", error=str(exc)[:200])


def _running_run(session: Session, job: str) -> JobRun | None:
    return session.scalars(
        select(JobRun)
        .where(JobRun.job == job, JobRun.outcome == Outcome.RUNNING)
        .order_by(JobRun.id.desc())
        .limit(1)
    ).first()


def _skipped_row(sessions: sessionmaker[Session], job: str, triggered_by: str) -> JobOutcome:
    with session_scope(sessions) as session:
        running = _running_run(session, job)
        why = "already running" + (
            f": run {running.id} started {running.started_at.isoformat(timespec='seconds')} "
            f"by {running.triggered_by}"
            if running is not None
            else " (another process holds the job's lock)"
        )
        now = utcnow()
        row = JobRun(
            job=job,
            triggered_by=triggered_by,
            started_at=now,
            finished_at=now,
            outcome=Outcome.SKIPPED,
            counts={},
            error=why,
        )
        session.add(row)
        session.flush()
        run_id = row.id
    log.info("job.skipped", job=job, run_id=run_id, reason=why)
    return JobOutcome(job=job, outcome=Outcome.SKIPPED, run_id=run_id, counts={}, error=why)


def _start_row(sessions: sessionmaker[Session], job: str, triggered_by: str) -> int:
    """The run's row; earlier rows still `running` belong to runs whose worker died (we hold the
    lock now, so none of them is alive): they are closed as failed."""
    with session_scope(sessions) as session:
        session.execute(
            update(JobRun)
            .where(JobRun.job == job, JobRun.outcome == Outcome.RUNNING)
            .values(
                outcome=Outcome.FAILED,
                finished_at=utcnow(),
                error="the worker running it was lost (its lock expired)",
            )
        )
        row = JobRun(job=job, triggered_by=triggered_by, outcome=Outcome.RUNNING, counts={})
        session.add(row)
        session.flush()
        return row.id


def _finish_row(
    sessions: sessionmaker[Session],
    run_id: int,
    outcome: str,
    counts: dict[str, int],
    error: str | None,
) -> None:
    with session_scope(sessions) as session:
        session.execute(
            update(JobRun)
            .where(JobRun.id == run_id)
            .values(outcome=outcome, finished_at=utcnow(), counts=counts, error=error)
        )


def _run_body(body: JobBody, context: JobContext) -> tuple[str, str | None]:
    try:
        body(context)
    except JobSkipped as exc:
        return Outcome.SKIPPED, str(exc)
    except Exception as exc:
        log.exception("job.failed", job=context.job, run_id=context.run_id)
        return Outcome.FAILED, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
    return Outcome.SUCCEEDED, None


def run_job(
    name: str,
    *,
    dry_run: bool = False,
    triggered_by: str = "cli",
    options: dict[str, Any] | None = None,
) -> JobOutcome:
    """Run job `name` in this process and return how it ended.

    A run that finds the job already running writes a `skipped` row and returns at once. A body's
    error ends the run `failed` with its counts so far (the next run finishes the rest); only a
    failure to reach Redis or the database at the start raises.
    """
    spec = job_spec(name)
    body = resolve_body(spec)
    settings, sessions, redis_client = runtime.settings(), runtime.sessions(), runtime.redis()
    context = JobContext(
        job=name,
        run_id=None,
        dry_run=dry_run,
        triggered_by=triggered_by,
        options=dict(options or {}),
        settings=settings,
        sessions=sessions,
        redis=redis_client,
    )
    started = time.monotonic()
    if dry_run:
        outcome, error = _run_body(body, context)
        log.info("job.dry_run", job=name, outcome=outcome, counts=dict(context.counts))
        return JobOutcome(name, outcome, None, dict(context.counts), error, dry_run=True)

    lock = JobLock(redis_client, name, settings.job_lock_ttl_seconds)
    if not lock.acquire():
        JOB_RUNS.labels(job=name, outcome=Outcome.SKIPPED).inc()
        return _skipped_row(sessions, name, triggered_by)
    try:
        context.run_id = _start_row(sessions, name, triggered_by)
        log.info("job.started", job=name, run_id=context.run_id, triggered_by=triggered_by)
        with lock.kept_alive():
            outcome, error = _run_body(body, context)
        counts = dict(context.counts)
        _finish_row(sessions, context.run_id, outcome, counts, error)
    finally:
        lock.release()
    JOB_RUNS.labels(job=name, outcome=outcome).inc()
    log.info(
        "job.finished",
        job=name,
        run_id=context.run_id,
        outcome=outcome,
        counts=counts,
        seconds=round(time.monotonic() - started, 3),
        error=error,
    )
    return JobOutcome(name, outcome, context.run_id, counts, error)


def recent_runs(session: Session, *, job: str | None = None, limit: int = 20) -> list[JobRun]:
    """The newest runs first (all jobs, or one)."""
    query = select(JobRun).order_by(JobRun.id.desc()).limit(limit)
    if job is not None:
        query = query.where(JobRun.job == job)
    return list(session.scalars(query))


def run_duration(run: JobRun) -> float | None:
    finished: datetime | None = run.finished_at
    return (finished - run.started_at).total_seconds() if finished else None

"""The base task: errors sorted once, retried with backoff, dead-lettered on final failure.

Every attempt of a task id is counted in Redis, retries and redeliveries alike, so a task whose worker
keeps dying under it (SIGKILL, OOM, hard time limit) is dead-lettered after the same limit instead of
looping forever. A failure while PostgreSQL does not answer at all is the fleet's, not the task's:
the task waits for the database (backoff up to DATABASE_WAIT_MAX_SECONDS) without using an attempt,
since without a database there is no dead letter to write either.
"""

from __future__ import annotations

import random
import traceback
from datetime import UTC, datetime
from typing import Any

from celery import Task
from celery.exceptions import Retry, SoftTimeLimitExceeded
from redis.exceptions import RedisError
from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from schemas.db import session_scope
from schemas.tables import InboxStatus, WebhookEvent
from workers import dead_letters, runtime
from workers.errors import PermanentError, TransientError, classify
from workers.logging import get_logger
from workers.metrics import DEAD_LETTERED, RETRIED

log = get_logger(__name__)
ATTEMPTS_KEY = "hookfleet:attempts:{task_id}"
ATTEMPTS_TTL_SECONDS = 7 * 86_400
ALERT_PENDING_KEY = "hookfleet:alert:pending"
ALERT_TASK = "tasks.notification.alert_dead_letters"
MAX_ERROR_CHARS = 2000
# The longest wait between two tries of a task while PostgreSQL does not answer.
DATABASE_WAIT_MAX_SECONDS = 30.0


# Per-task soft/hard limits (seconds); both stay well under BROKER_VISIBILITY_TIMEOUT.
DATABASE_TASK_LIMITS = {"soft_time_limit": 30, "time_limit": 60}
PROVIDER_CALL_TASK_LIMITS = {"soft_time_limit": 60, "time_limit": 90}


class WorkerLostRepeatedlyError(PermanentError):
    """The task was delivered more often than its attempts allow: its worker died under it."""


class DatabaseUnreachableError(TransientError):
    """Raised in place of a database error once PostgreSQL was found not to answer, so that the
    task's failure handling need not ask again."""


def database_down(exc: BaseException) -> bool:
    """Whether `exc` is a database error while PostgreSQL does not run a statement at all. A pooled
    connection that died with the server fails the check once and is dropped with the pool
    (SQLAlchemy's disconnect handling); the task then waits one more time, which is harmless."""
    if isinstance(exc, DatabaseUnreachableError):
        return True
    if not isinstance(exc, SQLAlchemyError):
        return False
    try:
        with runtime.engine().connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except SQLAlchemyError:
        return True
    return False


def backoff_seconds(
    retries_so_far: int, *, base: float, cap: float, retry_after: float | None
) -> float:
    """Exponential backoff with equal jitter (each delay at least the previous one's ceiling / 2
    and growing), never shorter than the provider's Retry-After."""
    ceiling: float = min(cap, base * 2.0**retries_so_far)
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    return max(delay, retry_after or 0.0)


class GatewayTask(Task):  # type: ignore[misc]
    """Tasks carrying an inbox event take its id as their first argument (`inbox_id`)."""

    acks_late = True
    reject_on_worker_lost = True
    # Retries are bounded by `limit` below, counted in Redis; Celery's own bound (3 by default)
    # would turn a retry past it into the original error, dropping the task unrecorded.
    max_retries = None
    # None: the global TASK_MAX_RETRIES; a task may set its own.
    retry_limit: int | None = None
    # False for tasks whose first argument is not an inbox event id (alerts, sweeps).
    carries_inbox_id = True

    @property
    def limit(self) -> int:
        return (
            self.retry_limit
            if self.retry_limit is not None
            else runtime.settings().task_max_retries
        )

    @property
    def attempt(self) -> int:
        """This delivery's attempt: retries and redeliveries counted, waits for the database not."""
        return int(getattr(self.request, "hookfleet_attempt", None) or self.request.retries + 1)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        attempt = self.request.hookfleet_attempt = self._count_attempt()
        if attempt > self.limit + 1:
            exc = WorkerLostRepeatedlyError(
                f"delivered {attempt} times; the worker was lost under attempts {self.limit + 1}"
            )
            self._dead_letter(exc, args, kwargs, attempts=attempt - 1, trace=None)
            return None
        try:
            return super().__call__(*args, **kwargs)
        except Retry:
            raise
        except Exception as exc:
            self._handle_failure(exc, args, kwargs, attempt)
            raise

    def _handle_failure(
        self, exc: Exception, args: tuple[Any, ...], kwargs: dict[str, Any], attempt: int
    ) -> None:
        timed_out = isinstance(exc, SoftTimeLimitExceeded)
        error = classify(TransientError(f"soft time limit: {exc}") if timed_out else exc)
        settings = runtime.settings()
        if database_down(exc):
            self._wait_for_database(exc, attempt)
        if isinstance(error, TransientError) and attempt <= self.limit:
            countdown = backoff_seconds(
                attempt - 1,
                base=settings.retry_backoff_seconds,
                cap=settings.retry_backoff_max_seconds,
                retry_after=error.retry_after,
            )
            RETRIED.labels(task=self.name).inc()
            log.warning(
                "task.retrying",
                attempt=attempt,
                countdown=round(countdown, 3),
                error=str(error)[:300],
                retry_after=error.retry_after,
            )
            raise self.retry(exc=exc, countdown=countdown, **self._headers())
        self._dead_letter(exc, args, kwargs, attempts=attempt, trace=traceback.format_exc())

    def _wait_for_database(self, exc: Exception, attempt: int) -> None:
        """Try again later, this attempt not counted; the waits grow up to
        DATABASE_WAIT_MAX_SECONDS, so a fleet's worth of tasks does not hammer a recovering server."""
        waits = self._uncount_attempt()
        countdown = backoff_seconds(
            waits - 1,
            base=runtime.settings().retry_backoff_seconds,
            cap=DATABASE_WAIT_MAX_SECONDS,
            retry_after=None,
        )
        RETRIED.labels(task=self.name).inc()
        log.warning(
            "task.waiting_for_database",
            attempt=attempt,
            waits=waits,
            countdown=round(countdown, 3),
            error=str(exc)[:300],
        )
        raise self.retry(exc=exc, countdown=countdown, **self._headers())

    def _uncount_attempt(self) -> int:
        """Take back this delivery's attempt; return how many times the task has waited so far."""
        key = ATTEMPTS_KEY.format(task_id=self.request.id)
        try:
            pipe = runtime.redis().pipeline()
            pipe.hincrby(key, "attempts", -1)
            pipe.hincrby(key, "database_waits", 1)
            _, waits = pipe.execute()
        except RedisError as exc:
            log.warning("task.attempt_not_taken_back", error=str(exc)[:200])
            return int(self.request.retries or 0) + 1
        return int(waits)

    def _headers(self) -> dict[str, Any]:
        replay_of = self._replay_of()
        return {"headers": {dead_letters.REPLAY_HEADER: replay_of}} if replay_of else {}

    def _replay_of(self) -> int | None:
        headers = self.request.headers or {}
        value = headers.get(dead_letters.REPLAY_HEADER) or getattr(
            self.request, dead_letters.REPLAY_HEADER, None
        )
        return int(value) if value is not None else None

    def _count_attempt(self) -> int:
        """Deliveries of this task id so far; Celery's own retry count when Redis cannot say."""
        key = ATTEMPTS_KEY.format(task_id=self.request.id)
        try:
            pipe = runtime.redis().pipeline()
            pipe.hincrby(key, "attempts", 1)
            pipe.hsetnx(key, "first_at", datetime.now(UTC).isoformat())
            pipe.expire(key, ATTEMPTS_TTL_SECONDS)
            attempts, _, _ = pipe.execute()
        except RedisError as exc:
            # A lost worker is then not counted, but the task still runs, retries or dead-letters.
            log.warning("task.attempt_uncounted", error=str(exc)[:200])
            return int(self.request.retries or 0) + 1
        return int(attempts)

    def _first_attempt_at(self) -> datetime | None:
        try:
            raw = runtime.redis().hget(ATTEMPTS_KEY.format(task_id=self.request.id), "first_at")
        except RedisError:
            return None
        if raw is None:
            return None
        return datetime.fromisoformat(raw.decode() if isinstance(raw, bytes) else raw)

    def _dead_letter(
        self,
        exc: BaseException,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        attempts: int,
        trace: str | None,
    ) -> None:
        inbox_id = kwargs.get("inbox_id", args[0] if args and isinstance(args[0], int) else None)
        delivery = self.request.delivery_info or {}
        try:
            with session_scope(runtime.sessions()) as session:
                row = dead_letters.record(
                    session,
                    task_name=self.name,
                    task_id=self.request.id,
                    args=args,
                    kwargs=kwargs,
                    queue=delivery.get("routing_key"),
                    exc=exc,
                    traceback=trace,
                    attempts=attempts,
                    first_failed_at=self._first_attempt_at(),
                    inbox_id=inbox_id if self.carries_inbox_id else None,
                    replay_of_id=self._replay_of(),
                )
                if self.carries_inbox_id and inbox_id is not None:
                    session.execute(
                        update(WebhookEvent)
                        .where(WebhookEvent.id == inbox_id)
                        .values(
                            status=InboxStatus.FAILED,
                            last_error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS],
                        )
                    )
                dead_letter_id = row.id
        except SQLAlchemyError as db_error:
            # No dead letter without a database: keep the message and try again later.
            log.error("task.dead_letter_unwritable", error=str(db_error)[:300])
            self._wait_for_database(db_error, attempts)
        DEAD_LETTERED.labels(task=self.name).inc()
        log.error(
            "task.dead_lettered",
            dead_letter_id=dead_letter_id,
            attempts=attempts,
            exc_type=type(exc).__name__,
            error=str(exc)[:300],
        )
        self._schedule_alert()

    def _schedule_alert(self) -> None:
        """One alert per window: the first dead letter schedules it, the rest ride along."""
        if self.name == ALERT_TASK:
            return  # a failing alert must not schedule alerts about itself
        window = runtime.settings().alert_window_seconds
        try:
            first = runtime.redis().set(ALERT_PENDING_KEY, "1", nx=True, ex=max(1, int(window)))
            if first:
                self.app.send_task(ALERT_TASK, countdown=window)
        except Exception as exc:  # the dead letter is stored; only its alert waits for the next one
            log.warning("task.alert_not_scheduled", error=str(exc)[:200])

"""Proof under faults: a worker SIGKILLed mid-call, Redis restarted under a backlog, Redis down while
webhooks arrive. Each test runs a fleet of its own on a private Redis and on a database of this
module's own, so nothing else is disturbed and no other fleet's inbox sweep takes these rows."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from schemas.db import make_engine
from schemas.tables import AuditEntry, Effect, InboxStatus, WebhookEvent, utcnow
from tests.conftest import make_settings
from tests.integration.conftest import restart_redis, running_fleet, start_redis
from tests.support.databases import migrated_database
from tests.support.processes import redis_url_of, wait_until
from tests.support.rows import stored
from tests.support.sandbox import SandboxServer
from tests.support.stripe_fixtures import StripeCustomer
from workers.celery_app import make_celery

pytestmark = pytest.mark.integration
T0 = 1_763_800_000
# An unacknowledged message (its worker died, or Redis restarted under it) is handed out again after
# the visibility timeout: an hour in production, seconds here so a test sees the redelivery.
SHORT_VISIBILITY = {
    "BROKER_VISIBILITY_TIMEOUT": "10",
    "TASK_DEFAULT_TIME_LIMIT": "8",
    "BROKER_UNACKED_RESTORE_INTERVAL": "1",
    "BROKER_UNACKED_RESTORE_THROTTLE": "1",
}


@pytest.fixture(scope="module")
def database_url(services: None) -> Iterator[str]:
    with migrated_database("hookfleet_faults") as url:
        yield url


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    """A sandbox of this module's own: the session's shared fleet keeps running (its beat sweeps
    the shared inbox) and calls the shared sandbox, where it took a fault meant for a test here."""
    with SandboxServer(tmp_path_factory.mktemp("faults-sandbox")) as server:
        yield server


@pytest.fixture(scope="module")
def pg_engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(make_settings(database_url=database_url))
    yield engine
    engine.dispose()


# Rows stored while the broker was down are published by the sweep two seconds later.
SWEEP_SOON = {"INBOX_RECEIVED_STALE_SECONDS": "2"}


def _statuses(engine: Engine, event_ids: list[str]) -> Counter[str]:
    with Session(engine) as session:
        rows = session.scalars(
            select(WebhookEvent.status).where(WebhookEvent.event_id.in_(event_ids))
        )
        return Counter(rows)


def _applications(engine: Engine, event_ids: list[str]) -> Counter[str]:
    """How many times each event changed a membership (an audit row per application)."""
    with Session(engine) as session:
        rows = session.scalars(
            select(AuditEntry.detail["stripe_event_id"].as_string()).where(
                AuditEntry.detail["stripe_event_id"].as_string().in_(event_ids),
                AuditEntry.action.like("membership.%"),
            )
        )
        return Counter(rows)


def test_worker_sigkilled_mid_call_finishes_after_restart_with_the_effect_once(
    database_url: str, sandbox: SandboxServer, tmp_path: Path, pg_engine: Engine
) -> None:
    redis = start_redis(tmp_path)
    sandbox.fault("slack", "chat.postMessage", status=0, count=1, latency=3)
    event = StripeCustomer.new().event("invoice.payment_failed", created=T0)
    invoice = event["data"]["object"]["id"] = f"in_Tkill{event['id'][5:]}"
    key = f"slack:payment_failed:{invoice}"
    try:
        with running_fleet(
            database_url, redis_url_of(redis), tmp_path, sandbox, overrides=SHORT_VISIBILITY
        ) as fleet:
            assert fleet.deliver(event).status_code == 200
            # The effect claimed and the call at the sandbox (it took the fault and waits out its
            # latency): a kill between the claim and the send would lose the post, by design.
            wait_until(
                lambda: _effect_state(pg_engine, key) == "started" and not sandbox.faults(),
                what="the call to begin",
            )

            fleet.worker.stop(signal.SIGKILL)
            killed_at = time.monotonic()
            fleet.start_worker("worker-2")

            wait_until(
                lambda: _statuses(pg_engine, [event["id"]]) == Counter({"processed": 1}),
                timeout=60,
                what="the event processed by the new worker",
            )
            print(f"\nSIGKILL mid-call: done {time.monotonic() - killed_at:.1f}s after the kill")
        posts = [c for c in sandbox.calls("slack", "chat.postMessage") if invoice in str(c["body"])]
        assert [post["effect"] for post in posts] == [True]
    finally:
        sandbox.reset()
        redis.stop()


def _effect_state(engine: Engine, key: str) -> str | None:
    with Session(engine) as session:
        return session.scalar(select(Effect.state).where(Effect.key == key))


def test_backlog_survives_a_restart_of_append_only_redis_but_the_task_being_handed_over(
    database_url: str, tmp_path: Path, pg_engine: Engine
) -> None:
    """Every queued task runs after the restart, the worker never restarted, except at most one:
    the task a BRPOP was taking as Redis stopped. Redis pops it (and its append-only file says so)
    before the worker has it, and the answer never arrives, so no client can put it back; kombu's
    Redis transport is at most once there, one BRPOP at a time. A webhook's task lost so is
    published again by the inbox sweep (its row stays enqueued)."""
    redis = start_redis(tmp_path, append_only=True)
    try:
        # Tasks in flight at the restart cannot be acknowledged: Redis redelivers them later.
        with running_fleet(
            database_url, redis_url_of(redis), tmp_path, overrides=SHORT_VISIBILITY
        ) as fleet:
            celery = make_celery(fleet.settings())
            markers = [f"aof-{tmp_path.name}-{n}" for n in range(60)]
            for marker in markers:
                celery.send_task("tests.fault_tasks.slow_mark", args=[marker, 0.1])
            time.sleep(0.5)

            redis = restart_redis(redis, tmp_path, append_only=True, down_for=1.0)

            def not_run() -> set[str]:
                fleet.worker.assert_running()  # a worker the restart ended fails here, with its log
                return set(markers) - set(_marks(pg_engine, markers))

            wait_until(lambda: len(not_run()) <= 1, timeout=90, what="the queued tasks to run")
            # A running task comes back after the visibility timeout (10 s here); wait it out.
            deadline = time.monotonic() + 15
            while not_run() and time.monotonic() < deadline:
                time.sleep(0.2)
            lost = not_run()
            runs = _marks(pg_engine, markers)
            print(
                f"\nAOF restart: {len(markers)} queued, {len(runs)} ran, "
                f"{sum(runs.values()) - len(runs)} ran twice (in flight at the restart), "
                f"{len(lost)} lost as it was handed over"
            )
            assert len(lost) <= 1
            fleet.worker.assert_running()
    finally:
        redis.stop()


def _marks(engine: Engine, markers: list[str]) -> Counter[str]:
    with Session(engine) as session:
        rows = session.scalars(
            select(AuditEntry.entity_id).where(
                AuditEntry.action == "test.slow_mark", AuditEntry.entity_id.in_(markers)
            )
        )
        return Counter(rows)


def test_webhooks_received_while_redis_is_down_are_all_processed_once_by_the_sweep(
    database_url: str, tmp_path: Path, pg_engine: Engine
) -> None:
    redis = start_redis(tmp_path)
    try:
        with running_fleet(
            database_url, redis_url_of(redis), tmp_path, beat=True, overrides=SWEEP_SOON
        ) as fleet:
            redis.stop()
            events = [
                StripeCustomer.new().event("checkout.session.completed", created=T0)
                for _ in range(50)
            ]
            answers = [fleet.deliver(event) for event in events]
            assert {response.status_code for response in answers} == {200}
            assert {response.json()["status"] for response in answers} == {"accepted"}
            ids = [event["id"] for event in events]
            assert _statuses(pg_engine, ids) == Counter({"received": 50})

            redis = restart_redis(redis, tmp_path, append_only=False, down_for=0)
            back_at = time.monotonic()

            wait_until(
                lambda: _statuses(pg_engine, ids) == Counter({"processed": 50}),
                timeout=60,
                what="all 50 processed",
            )
            print(
                f"\nRedis down: 50 stored, all processed {time.monotonic() - back_at:.1f}s "
                "after Redis came back"
            )
            assert set(_applications(pg_engine, ids).values()) == {1}
            assert len(_applications(pg_engine, ids)) == 50
    finally:
        redis.stop()


def _processed_at(engine: Engine, event_ids: list[str]) -> list[datetime]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(WebhookEvent.processed_at).where(
                    WebhookEvent.event_id.in_(event_ids), WebhookEvent.processed_at.is_not(None)
                )
            )
        )


# Rows an outage left `received`: about three seconds of work for the test's worker.
BACKLOG_ROWS = 1_500


def test_a_live_webhook_is_processed_while_the_sweeps_backlog_still_drains(
    database_url: str, tmp_path: Path, pg_engine: Engine
) -> None:
    backlog = [
        StripeCustomer.new().event("checkout.session.completed", created=T0)
        for _ in range(BACKLOG_ROWS)
    ]
    backlog_ids = [event["id"] for event in backlog]
    stored(
        pg_engine, backlog, status=InboxStatus.RECEIVED, received_at=utcnow() - timedelta(hours=1)
    )
    redis = start_redis(tmp_path)
    try:
        with running_fleet(database_url, redis_url_of(redis), tmp_path) as fleet:
            make_celery(fleet.settings()).send_task("workers.maintenance.sweep_inbox")
            wait_until(
                lambda: "received" not in _statuses(pg_engine, backlog_ids),
                timeout=30,
                what="the backlog published",
            )
            live = StripeCustomer.new().event("checkout.session.completed", created=T0)
            sent_at = utcnow()
            assert fleet.deliver(live).status_code == 200

            wait_until(
                lambda: (
                    len(_processed_at(pg_engine, [*backlog_ids, live["id"]])) == BACKLOG_ROWS + 1
                ),
                timeout=120,
                what="backlog and live webhook processed",
            )
            (live_at,) = _processed_at(pg_engine, [live["id"]])
            backlog_at = _processed_at(pg_engine, backlog_ids)
            after = sum(at > live_at for at in backlog_at)
            print(
                f"\nlive webhook processed {(live_at - sent_at).total_seconds():.2f} s after it was"
                f" sent, with {after} of {BACKLOG_ROWS} backlog rows still to go; backlog drained"
                f" {(max(backlog_at) - sent_at).total_seconds():.2f} s after it was sent"
            )
            # In one queue, first in first out, the live webhook came after the whole backlog.
            assert after > BACKLOG_ROWS // 2
    finally:
        redis.stop()

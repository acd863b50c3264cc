"""When PostgreSQL goes away the gateway refuses with 503, so the provider retries, and the workers
wait for it with what was already stored; nothing is lost."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from schemas.migrate import upgrade
from tests.conftest import STRIPE_SECRET, make_settings
from tests.integration.conftest import fleet_env, running_fleet, start_redis
from tests.signing import sign_stripe
from tests.support.private_postgres import PrivatePostgres
from tests.support.processes import (
    Service,
    free_port,
    gateway_service,
    redis_url_of,
    wait_for_http,
    wait_until,
)
from tests.support.sandbox import SandboxServer
from tests.support.stripe_fixtures import StripeCustomer, body_of
from workers.celery_app import make_celery

pytestmark = pytest.mark.integration


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(Path("/tmp") / f"hookfleet-pg-{tmp_path.name}", free_port())
    server.init()
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.directory, ignore_errors=True)


def _post(url: str, sent: list[str] | None = None) -> httpx.Response:
    event = StripeCustomer.new().event("checkout.session.completed")
    if sent is not None:
        sent.append(event["id"])
    body = body_of(event)
    headers = sign_stripe(body, secret=STRIPE_SECRET, at=datetime.now(UTC))
    return httpx.post(f"{url}/webhooks/stripe", content=body, headers=headers, timeout=15)


def _stored(database_url: str, event_ids: list[str]) -> int:
    with psycopg.connect(database_url) as connection:
        row = connection.execute(
            "SELECT count(*) FROM webhook_events WHERE event_id = ANY(%s)", (event_ids,)
        ).fetchone()
    return int(row[0]) if row else 0


def test_gateway_answers_503_while_postgres_is_stopped_and_recovers(
    own_postgres: PrivatePostgres, redis: Service, tmp_path: Path
) -> None:
    upgrade(make_settings(database_url=own_postgres.url))
    port = free_port()
    gateway = gateway_service(port, fleet_env(own_postgres.url, redis_url_of(redis)), tmp_path)
    gateway.start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/healthz", gateway)
        assert _post(url).status_code == 200

        own_postgres.stop()
        refused: list[str] = []
        during = [_post(url, refused) for _ in range(5)]
        ready = httpx.get(f"{url}/readyz", timeout=15)

        assert [(r.status_code, r.json()) for r in during] == [
            (503, {"error": "inbox_unavailable"})
        ] * 5
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] is False

        own_postgres.start()
        assert _post(url).status_code == 200
        assert _stored(own_postgres.url, refused) == 0  # nothing acknowledged was lost, none stored
    finally:
        gateway.stop()


def _statuses(database_url: str, event_ids: list[str]) -> dict[str, int]:
    with psycopg.connect(database_url) as connection:
        rows = connection.execute(
            "SELECT status, count(*) FROM webhook_events WHERE event_id = ANY(%s) GROUP BY status",
            (event_ids,),
        ).fetchall()
    return {status: count for status, count in rows}


def _count(database_url: str, query: str) -> int:
    with psycopg.connect(database_url) as connection:
        row = connection.execute(query).fetchone()
    return int(row[0]) if row else 0


# Longer than a task's four attempts take on the test clock (at most 3.5 s), as a managed database's
# failover; a task that waits for the database meanwhile is delivered about five times, more than
# Celery's default bound of three retries.
POSTGRES_DOWN_SECONDS = 8


def test_tasks_queued_while_postgres_is_stopped_wait_for_it_without_using_their_attempts(
    own_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    upgrade(make_settings(database_url=own_postgres.url))
    # A Redis of its own: the session's shared fleet, on the shared Redis, would take these tasks.
    redis = start_redis(tmp_path)
    try:
        with (
            SandboxServer(tmp_path) as sandbox,
            running_fleet(own_postgres.url, redis_url_of(redis), tmp_path, sandbox) as fleet,
        ):
            fleet.worker.stop()
            events = [StripeCustomer.new().event("checkout.session.completed") for _ in range(10)]
            assert {fleet.deliver(event).status_code for event in events} == {200}
            ids = [event["id"] for event in events]
            marker = f"outage-{time.time()}"

            own_postgres.stop()
            make_celery(fleet.settings()).send_task("tests.fault_tasks.always_permanent", [marker])
            fleet.worker = fleet.start_worker()
            time.sleep(POSTGRES_DOWN_SECONDS)
            own_postgres.start()
            back_at = time.monotonic()

            wait_until(
                lambda: _statuses(own_postgres.url, ids) == {"processed": 10},
                timeout=120,
                what="all 10 processed",
            )
            print(
                f"\nPostgreSQL down {POSTGRES_DOWN_SECONDS} s: 10 events processed"
                f" {time.monotonic() - back_at:.1f} s after it came back"
            )
            assert _count(own_postgres.url, "SELECT count(*) FROM memberships") == 10
            # The task that fails for good is dead-lettered once, after its one attempt, not dropped
            # past Celery's default of three retries while it waited.
            wait_until(lambda: _dead_letters(own_postgres.url), timeout=60, what="a dead letter")
            assert _dead_letters(own_postgres.url) == [
                ("tests.fault_tasks.always_permanent", [marker], 1)
            ]
            wait_until(lambda: _alerts(sandbox), timeout=15, what="the alert")
            assert len(_alerts(sandbox)) == 1
    finally:
        redis.stop()


def _alerts(sandbox: SandboxServer) -> list[dict[str, Any]]:
    return [
        call
        for call in sandbox.calls("slack", "chat.postMessage")
        if "new dead letter" in str(call["body"].get("text", ""))
    ]


def _dead_letters(database_url: str) -> list[tuple[str, list[str], int]]:
    with psycopg.connect(database_url) as connection:
        return [
            (task_name, args, attempts)
            for task_name, args, attempts in connection.execute(
                "SELECT task_name, args, attempts FROM dead_letters ORDER BY id"
            )
        ]

"""/metrics after a scripted run: the values scraped from the gateway (two uvicorn processes) and a
prefork worker (two children) equal the counts the run caused.

The run: one Stripe `invoice.payment_failed` whose Slack post fails once with a 500 and succeeds on
its retry, the same delivery again (a duplicate), a delivery with a bad signature, and a task that
fails for good (a dead letter, then the operators' alert). Each process tree has its own
PROMETHEUS_MULTIPROC_DIR, wiped at its start (a stale file planted before is not counted), on a
database and Redis of this test's own so no other fleet's work is counted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from schemas.db import make_engine
from schemas.tables import DeadLetter, WebhookEvent
from tests.conftest import STRIPE_SECRET, make_settings
from tests.integration.conftest import fleet_env, start_redis
from tests.signing import sign_stripe
from tests.support.databases import migrated_database
from tests.support.processes import (
    Service,
    free_port,
    gateway_service,
    redis_url_of,
    wait_for_http,
    wait_for_worker,
    wait_until,
    worker_service,
)
from tests.support.sandbox import SandboxServer
from tests.support.stripe_fixtures import StripeCustomer, body_of
from workers.celery_app import make_celery
from workers.queues import QUEUES
from workers.worker_metrics import MULTIPROC_ENV, reset_multiprocess_dir

pytestmark = pytest.mark.integration
ANNOUNCE = "tasks.notification.announce_payment_failed"
PROCESS_EVENTS = "tasks.dispatch.process_events"  # what the relay sends
ALWAYS_PERMANENT = "tests.fault_tasks.always_permanent"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class MeteredFleet:
    url: str
    worker_metrics_url: str
    env: dict[str, str]
    engine: Engine


@pytest.fixture
def private_database(services: None) -> Iterator[str]:
    with migrated_database("hookfleet_metrics") as url:
        yield url


def _plant_stale_counter(directory: Path) -> None:
    """What a previous worker tree left behind: a dead-lettered count of 5 under a pid long gone."""
    script = (
        "from workers.metrics import DEAD_LETTERED; "
        "DEAD_LETTERED.labels(task='stale.from.a.previous.run').inc(5)"
    )
    env = {**os.environ, MULTIPROC_ENV: str(directory)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    assert list(directory.glob("counter_*.db"))


@pytest.fixture
def metered_fleet(
    private_database: str, tmp_path: Path, clean_sandbox: SandboxServer
) -> Iterator[MeteredFleet]:
    redis = start_redis(tmp_path)
    env = fleet_env(private_database, redis_url_of(redis), clean_sandbox)
    gateway_dir, worker_dir = tmp_path / "metrics-gateway", tmp_path / "metrics-worker"
    reset_multiprocess_dir(gateway_dir)  # the launcher's job for uvicorn's process tree
    worker_dir.mkdir()
    _plant_stale_counter(worker_dir)  # the worker's main process wipes its own directory
    port, metrics_port = free_port(), free_port()
    gateway = gateway_service(port, env | {MULTIPROC_ENV: str(gateway_dir)}, tmp_path)
    gateway.argv += ["--workers", "2"]
    worker_env = env | {MULTIPROC_ENV: str(worker_dir), "WORKER_METRICS_PORT": str(metrics_port)}
    worker = worker_service(worker_env, tmp_path, name="metered")
    engine = make_engine(make_settings(database_url=private_database))
    started: list[Service] = []
    try:
        for service in (gateway, worker):
            service.start()
            started.append(service)
        control = make_celery(make_settings(redis_url=redis_url_of(redis)))
        wait_for_worker(lambda: bool(control.control.ping(timeout=0.5)), worker)
        wait_for_http(f"http://127.0.0.1:{port}/healthz", gateway)
        wait_for_http(f"http://127.0.0.1:{metrics_port}/metrics", worker)
        yield MeteredFleet(
            f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}", env, engine
        )
    finally:
        for service in reversed(started):
            service.stop()
        redis.stop()
        engine.dispose()


def _scrape(url: str) -> Samples:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _value(samples: Samples, metric: str, /, **labels: str) -> float:
    """The sum over every series of `metric` whose labels include `labels` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, got), v in samples.items() if n == metric and wanted <= got)


def _deliver(fleet: MeteredFleet, body: bytes, secret: str = STRIPE_SECRET) -> int:
    headers = sign_stripe(body, secret=secret, at=datetime.now(UTC))
    response = httpx.post(f"{fleet.url}/webhooks/stripe", content=body, headers=headers, timeout=15)
    return response.status_code


def _count(engine: Engine, model: type[WebhookEvent] | type[DeadLetter], **where: str) -> int:
    with Session(engine) as session:
        query = select(func.count()).select_from(model)
        for column, value in where.items():
            query = query.where(getattr(model, column) == value)
        return int(session.scalar(query) or 0)


def test_scraped_metrics_equal_the_counts_a_scripted_run_caused(
    metered_fleet: MeteredFleet, clean_sandbox: SandboxServer
) -> None:
    fleet = metered_fleet
    clean_sandbox.fault("slack", "chat.postMessage", status=500, count=1)
    event = StripeCustomer.new().event("invoice.payment_failed")
    body = body_of(event)

    assert _deliver(fleet, body) == 200
    assert _deliver(fleet, body) == 200  # the same event again: a duplicate
    assert _deliver(fleet, body, secret="whsec_not_the_right_one") == 400
    make_celery(make_settings(redis_url=fleet.env["REDIS_URL"])).send_task(
        ALWAYS_PERMANENT, args=["metrics-run"]
    )

    wait_until(
        lambda: _count(fleet.engine, WebhookEvent, event_id=event["id"], status="processed"),
        timeout=30,
        what="the payment failure processed",
    )
    wait_until(lambda: _count(fleet.engine, DeadLetter), timeout=30, what="the dead letter")
    wait_until(
        lambda: any(
            "dead letter" in c["body"].get("text", "")
            for c in clean_sandbox.effects("slack", "chat.postMessage")
        ),
        timeout=30,
        what="the operators' alert",
    )
    slack_statuses = [c["status"] for c in clean_sandbox.calls("slack", "chat.postMessage")]
    # The last task's counters are written when its signal handlers ran, just after its effect.
    wait_until(
        lambda: _value(_scrape(fleet.worker_metrics_url), "celery_task_succeeded_total",
                       name="tasks.notification.alert_dead_letters") == 1,
        timeout=15,
        what="the alert task's success counted",
    )  # fmt: skip

    gateway = _scrape(fleet.url)
    worker = _scrape(fleet.worker_metrics_url)

    stripe = {"provider": "stripe"}
    assert _value(gateway, "webhooks_received_total", **stripe, outcome="accepted") == 1
    assert _value(gateway, "webhooks_received_total", **stripe, outcome="duplicate") == 1
    assert _value(gateway, "webhooks_received_total", **stripe, outcome="invalid_signature") == 1
    assert _value(gateway, "webhooks_ack_latency_seconds_count", **stripe) == 3
    assert _value(gateway, "webhooks_ack_latency_seconds_bucket", **stripe, le="+Inf") == 3
    assert _value(gateway, "hookfleet_inbox_events", status="processed") == 1
    assert _value(gateway, "hookfleet_inbox_events") == 1
    assert (
        _value(gateway, "celery_task_sent_total", name=PROCESS_EVENTS, queue_name="dispatch") == 1
    )

    announce = {"name": ANNOUNCE, "queue_name": "notification"}
    assert _value(worker, "celery_task_started_total", **announce) == 2
    assert _value(worker, "celery_task_retried_total", **announce) == 1
    assert _value(worker, "celery_task_succeeded_total", **announce) == 1
    assert _value(worker, "celery_task_failed_total", **announce) == 0
    assert _value(worker, "celery_task_runtime_count", **announce) == 2
    assert _value(worker, "hookfleet_task_queue_wait_seconds_count", **announce) == 2
    assert _value(worker, "hookfleet_task_retried_total", task=ANNOUNCE) == 1
    assert _value(worker, "celery_task_succeeded_total", name=PROCESS_EVENTS) == 1

    failing = {"name": ALWAYS_PERMANENT}
    assert _value(worker, "celery_task_failed_total", **failing, exception="ValueError") == 1
    assert _value(worker, "hookfleet_task_dead_lettered_total", task=ALWAYS_PERMANENT) == 1
    assert _value(worker, "hookfleet_task_dead_lettered_total") == 1  # the stale 5 are gone
    assert _value(worker, "hookfleet_dead_letters", status="dead") == 1
    assert _value(worker, "hookfleet_dead_letters", status="replayed") == 0
    assert 0 <= _value(worker, "hookfleet_dead_letter_oldest_age_seconds") < 600

    assert slack_statuses.count(500) == 1
    for status in set(slack_statuses):
        assert _value(
            worker, "hookfleet_provider_api_calls_total", provider="slack", status=str(status)
        ) == slack_statuses.count(status)
    assert _value(worker, "hookfleet_provider_api_calls_total", provider="slack") == len(
        slack_statuses
    )
    assert _value(worker, "celery_worker_up") == 1
    queues = {
        dict(labels)["queue_name"] for (name, labels) in worker if name == "celery_queue_length"
    }
    assert queues == set(QUEUES)
    assert _value(worker, "celery_queue_length") == 0
    assert _value(worker, "hookfleet_scrape_collector_up", collector="dead_letters") == 1
    assert _value(worker, "hookfleet_scrape_collector_up", collector="queues") == 1

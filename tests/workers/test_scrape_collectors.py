"""Gauges computed at scrape time: inbox rows and dead letters counted in the database, queue
lengths asked of the broker, and a store that does not answer costing its own family only."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery import Celery
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from schemas.db import make_engine
from schemas.migrate import upgrade
from schemas.tables import DeadLetter, WebhookEvent
from tests.conftest import make_settings
from workers.scrape_collectors import (
    DeadLetterCollector,
    InboxCollector,
    QueueLengthCollector,
    WorkerUpCollector,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
_EVENT_IDS = itertools.count(1)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'collectors.db'}")
    upgrade(settings)
    engine = make_engine(settings)
    yield engine
    engine.dispose()


def _scrape(*collectors: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = _registry(*collectors)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
    }


def _inbox(session: Session, n: int, status: str) -> None:
    session.add_all(
        WebhookEvent(
            provider="stripe",
            event_id=f"evt_{next(_EVENT_IDS)}",
            event_type="invoice.paid",
            body=b"{}",
            status=status,
        )
        for _ in range(n)
    )
    session.commit()


def _dead(session: Session, status: str, failed_at: datetime) -> None:
    session.add(
        DeadLetter(
            task_name="tasks.sync.x",
            task_id=f"t-{status}-{failed_at.timestamp()}",
            exc_type="PermanentError",
            exc_message="no",
            status=status,
            first_failed_at=failed_at,
            last_failed_at=failed_at,
        )
    )
    session.commit()


def test_inbox_rows_are_counted_by_status_with_every_status_present(engine: Engine) -> None:
    with Session(engine) as session:
        _inbox(session, 3, "processed")
        _inbox(session, 2, "received")
        _inbox(session, 1, "failed")

    scraped = _scrape(InboxCollector(engine))

    by_status = {
        dict(labels)["status"]: value
        for (name, labels), value in scraped.items()
        if name == "hookfleet_inbox_events"
    }
    assert by_status == {
        "received": 2.0,
        "enqueued": 0.0,
        "dispatched": 0.0,
        "processed": 3.0,
        "ignored": 0.0,
        "failed": 1.0,
    }
    assert scraped[("hookfleet_scrape_collector_up", (("collector", "inbox"),))] == 1.0


def test_dead_letters_by_status_and_the_age_of_the_oldest_still_dead(engine: Engine) -> None:
    with Session(engine) as session:
        _dead(session, "dead", NOW - timedelta(hours=30))
        _dead(session, "dead", NOW - timedelta(minutes=5))
        _dead(session, "replayed", NOW - timedelta(days=9))  # handled: not waiting for anyone

    scraped = _scrape(DeadLetterCollector(engine, clock=lambda: NOW))

    assert scraped[("hookfleet_dead_letters", (("status", "dead"),))] == 2.0
    assert scraped[("hookfleet_dead_letters", (("status", "replayed"),))] == 1.0
    assert scraped[("hookfleet_dead_letters", (("status", "discarded"),))] == 0.0
    assert scraped[("hookfleet_dead_letter_oldest_age_seconds", ())] == 30 * 3600


def test_no_dead_letter_means_an_oldest_age_of_zero(engine: Engine) -> None:
    scraped = _scrape(DeadLetterCollector(engine, clock=lambda: NOW))

    assert scraped[("hookfleet_dead_letter_oldest_age_seconds", ())] == 0.0


def test_a_database_that_does_not_answer_leaves_the_scrape_whole(engine: Engine) -> None:
    gone = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")

    body = generate_latest(_registry(InboxCollector(gone), WorkerUpCollector("web-1"))).decode()

    assert 'hookfleet_scrape_collector_up{collector="inbox"} 0.0' in body
    assert 'celery_worker_up{hostname="web-1"} 1.0' in body
    assert "hookfleet_inbox_events" not in body


def _registry(*collectors: object) -> CollectorRegistry:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]
    return registry


def test_queue_lengths_are_the_messages_waiting_in_each_broker_queue() -> None:
    app = Celery("lengths", broker="memory://")
    # The memory broker is shared by the whole test process: queues of this test's own.
    empty, one, three = (f"{name}-{uuid.uuid4().hex}" for name in ("empty", "one", "three"))
    for _ in range(3):
        app.send_task("tasks.sync.anything", queue=three, routing_key=three)
    app.send_task("tasks.lifecycle.anything", queue=one, routing_key=one)

    scraped = _scrape(QueueLengthCollector(app, [empty, one, three]))

    lengths = {
        dict(labels)["queue_name"]: value
        for (name, labels), value in scraped.items()
        if name == "celery_queue_length"
    }
    assert lengths == {empty: 0.0, one: 1.0, three: 3.0}


def test_a_broker_that_does_not_answer_marks_the_queue_collector_down() -> None:
    app = Celery("gone", broker="redis://127.0.0.1:1/0")
    app.conf.broker_connection_timeout = 0.5

    scraped = _scrape(QueueLengthCollector(app, ["dispatch"]))

    assert scraped == {("hookfleet_scrape_collector_up", (("collector", "queues"),)): 0.0}

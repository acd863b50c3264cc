"""The worker-side metric hooks in-process: publishes counted and stamped with their time, queue
wait measured from that stamp (or the ETA a retry asked for), the multiprocess directory reset."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

from celery import Celery
from prometheus_client import REGISTRY

from workers.worker_metrics import SENT_AT_HEADER, _queue_wait, reset_multiprocess_dir


def _sent(name: str, queue: str) -> float:
    labels = {"name": name, "queue_name": queue}
    return sum(
        sample.value
        for family in REGISTRY.collect()
        if family.name == "celery_task_sent"
        for sample in family.samples
        if sample.name == "celery_task_sent_total" and labels.items() <= sample.labels.items()
    )


def test_a_published_task_is_counted_by_name_and_queue_and_carries_its_publish_time() -> None:
    app = Celery("published", broker="memory://")
    queue = f"sync-{uuid.uuid4().hex}"  # the memory broker is shared by the whole test process
    published_at = time.time()

    app.send_task("tasks.sync.push_member", args=[1], queue=queue, routing_key=queue)

    assert _sent("tasks.sync.push_member", queue) == 1
    with app.connection_for_read() as connection:
        message = connection.SimpleQueue(queue).get(timeout=2)
        stamp = float(message.headers[SENT_AT_HEADER])
        message.ack()
    assert published_at <= stamp <= time.time()


def _request(sent_at: float | None, eta: datetime | str | None = None) -> SimpleNamespace:
    headers = {} if sent_at is None else {SENT_AT_HEADER: sent_at}
    return SimpleNamespace(headers=headers, eta=eta)


def test_queue_wait_runs_from_the_publish_time() -> None:
    sent_at = time.time() - 5

    wait = _queue_wait(_request(sent_at))

    assert wait is not None
    assert 5 <= wait <= time.time() - sent_at


def test_queue_wait_of_a_delayed_retry_runs_from_its_eta_not_from_its_publish() -> None:
    eta = datetime.now(UTC) - timedelta(seconds=2)

    wait = _queue_wait(_request(time.time() - 60, eta.isoformat()))

    assert wait is not None
    assert 2 <= wait <= (datetime.now(UTC) - eta).total_seconds()


def test_a_message_without_the_stamp_has_no_queue_wait() -> None:
    assert _queue_wait(_request(None)) is None


def test_reset_empties_the_directory_of_metric_files_only(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_123.db").write_bytes(b"old")
    (directory / "histogram_456.db").write_bytes(b"old")
    (directory / "README").write_text("kept")

    reset_multiprocess_dir(directory)
    reset_multiprocess_dir(tmp_path / "created" / "on" / "demand")

    assert sorted(p.name for p in directory.iterdir()) == ["README"]
    assert (tmp_path / "created" / "on" / "demand").is_dir()

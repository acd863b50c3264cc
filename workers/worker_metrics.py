"""Task metrics from Celery's signals, and the worker's own /metrics server.

Every process that publishes tasks (gateway, workers, beat) counts `celery_task_sent` and stamps
the message with its publish time; the worker's prefork children count received / started /
succeeded / failed / retried, observe runtime and queue wait, and write them to the
PROMETHEUS_MULTIPROC_DIR. The worker's main process wipes that directory when the process tree
starts (before any child exists), serves the sum of every child's files on WORKER_METRICS_PORT
(celery-exporter's 9808 by default) once the pool is up, plus the gauges computed at scrape time;
a child that exits is marked dead so its live gauges stop counting.

Without PROMETHEUS_MULTIPROC_DIR the children's values could not be summed, so the server does not
start (and says so) rather than serve the main process's nearly empty registry as if it were all.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from celery import signals
from celery.utils import nodesplit
from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from schemas.db import make_engine
from workers import runtime
from workers.logging import get_logger
from workers.metrics import (
    TASK_FAILED,
    TASK_QUEUE_WAIT,
    TASK_RECEIVED,
    TASK_RETRIED,
    TASK_RUNTIME,
    TASK_SENT,
    TASK_STARTED,
    TASK_SUCCEEDED,
)
from workers.queues import QUEUES
from workers.scrape_collectors import DeadLetterCollector, QueueLengthCollector, WorkerUpCollector

log = get_logger(__name__)
SENT_AT_HEADER = "hookfleet_sent_at"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_PUBLISHER = socket.gethostname()
_started: dict[str, float] = {}  # task id -> monotonic start, in the child running it


def reset_multiprocess_dir(path: Path) -> None:
    """Create `path`, or empty it of a previous process tree's files (only *.db files)."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)


def _host(hostname: str | None) -> str:
    """`celery@web-1` -> `web-1`, as celery-exporter labels hosts."""
    return nodesplit(hostname)[1] if hostname else "unknown"


def _queue(request: Any) -> str:
    delivery = getattr(request, "delivery_info", None) or {}
    return str(delivery.get("routing_key") or "unknown")


def _labels(task: Any) -> dict[str, str]:
    request = task.request
    return {"name": task.name, "hostname": _host(request.hostname), "queue_name": _queue(request)}


@signals.before_task_publish.connect
def _on_publish(
    sender: str | None = None,
    headers: dict[str, Any] | None = None,
    routing_key: str | None = None,
    **_: Any,
) -> None:
    name = (headers or {}).get("task") or sender or "unknown"
    TASK_SENT.labels(name=name, hostname=_PUBLISHER, queue_name=routing_key or "unknown").inc()
    if headers is not None:
        headers[SENT_AT_HEADER] = time.time()


@signals.task_received.connect
def _on_received(request: Any = None, **_: Any) -> None:
    if request is None:
        return
    TASK_RECEIVED.labels(
        name=request.task_name, hostname=_host(request.hostname), queue_name=_queue(request)
    ).inc()


def _queue_wait(request: Any) -> float | None:
    """Seconds from publish (or from the ETA / countdown a retry asked for) to now."""
    sent_at = getattr(request, SENT_AT_HEADER, None) or (request.headers or {}).get(SENT_AT_HEADER)
    if sent_at is None:
        return None
    ready_at = float(sent_at)
    if request.eta:
        eta = (
            request.eta
            if isinstance(request.eta, datetime)
            else datetime.fromisoformat(request.eta)
        )
        ready_at = max(ready_at, eta.timestamp())
    return max(0.0, time.time() - ready_at)


@signals.task_prerun.connect
def _on_started(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task is None or task_id is None:
        return
    labels = _labels(task)
    TASK_STARTED.labels(**labels).inc()
    wait = _queue_wait(task.request)
    if wait is not None:
        TASK_QUEUE_WAIT.labels(name=labels["name"], queue_name=labels["queue_name"]).observe(wait)
    _started[task_id] = time.monotonic()


@signals.task_postrun.connect
def _on_finished(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    started = _started.pop(task_id or "", None)
    if task is not None and started is not None:
        TASK_RUNTIME.labels(**_labels(task)).observe(time.monotonic() - started)


@signals.task_success.connect
def _on_succeeded(sender: Any = None, **_: Any) -> None:
    if sender is not None:
        TASK_SUCCEEDED.labels(**_labels(sender)).inc()


@signals.task_failure.connect
def _on_failed(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    if sender is not None:
        TASK_FAILED.labels(
            **_labels(sender), exception=type(exception).__name__ if exception else ""
        ).inc()


@signals.task_retry.connect
def _on_retried(sender: Any = None, **_: Any) -> None:
    if sender is not None:
        TASK_RETRIED.labels(**_labels(sender)).inc()


@signals.worker_process_shutdown.connect
def _on_child_exit(pid: int | None = None, **_: Any) -> None:
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]


@signals.worker_init.connect
def _on_worker_init(**_: Any) -> None:
    """The process tree starts here: no child has forked, so every file in the directory is stale."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        reset_multiprocess_dir(Path(directory))


def worker_registry(app: Any, hostname: str) -> CollectorRegistry:
    """Every child's counters and histograms, summed, plus this worker's scrape-time gauges."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(WorkerUpCollector(_host(hostname)))
    registry.register(QueueLengthCollector(app, QUEUES))
    registry.register(DeadLetterCollector(make_engine(runtime.settings())))
    return registry


@signals.worker_ready.connect
def _serve_metrics(sender: Any = None, **_: Any) -> None:
    """Once the pool is up, from the main process: /metrics on WORKER_METRICS_PORT."""
    settings = runtime.settings()
    if not os.environ.get(MULTIPROC_ENV):
        log.warning(
            "metrics.worker_server_off",
            reason=f"{MULTIPROC_ENV} is not set, so the pool processes' metrics cannot be summed",
        )
        return
    if sender is None:
        return
    hostname = str(getattr(sender, "hostname", "") or _PUBLISHER)
    try:
        start_http_server(
            settings.worker_metrics_port,
            addr=settings.worker_metrics_address,
            registry=worker_registry(sender.app, hostname),
        )
    except OSError as exc:  # another worker on this host holds the port: run on without metrics
        log.error("metrics.worker_server_failed", port=settings.worker_metrics_port, error=str(exc))
        return
    log.info(
        "metrics.worker_server",
        address=settings.worker_metrics_address,
        port=settings.worker_metrics_port,
    )
